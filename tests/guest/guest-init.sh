#!/bin/sh
# /sbin/init of the HLFS test guest's root filesystem (busybox sh).
# It reports on the serial console in lines "HLFS-GUEST: key=value" that a
# test harness parses, runs at most one command list, makes every write
# durable and powers the VM off. See README.md for the protocol.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
# The initramfs moved these mounts here; mount them if booted some other way.
[ -e /proc/self ] || mount -t proc proc /proc
[ -d /sys/kernel ] || mount -t sysfs sysfs /sys
[ -c /dev/null ] || mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

say() { echo "HLFS-GUEST: $*"; }

MARKER=/var/hlfs-marker
FILL=/var/hlfs-fill
FWCFG=/sys/firmware/qemu_fw_cfg/by_name/opt/hlfs/cmd/raw

# Firmware may leave the cursor mid-line: start the protocol on a fresh line.
echo
say boot
if [ -f "$MARKER" ]; then
    say "marker=$(cat "$MARKER")"
else
    say "marker=NONE"
fi
if [ -f "$FILL" ]; then
    sum=$(sha256sum "$FILL")
    say "fill-sha256=${sum%% *}"
fi

# fw_cfg wins over the kernel command line (which only -kernel boots can set).
cmd=""
if [ -r "$FWCFG" ]; then
    cmd=$(cat "$FWCFG")
else
    # shellcheck disable=SC2013 # the command line is words, not lines
    for arg in $(cat /proc/cmdline); do
        case "$arg" in hlfs.cmd=*) cmd="${arg#hlfs.cmd=}" ;; esac
    done
fi
say "cmd=${cmd:-NONE}"

# Replace a file atomically and durably: data synced before the rename,
# rename synced before we report success.
put_file() { # path content
    printf '%s' "$2" >"$1.tmp" && sync && mv "$1.tmp" "$1" && sync
}

# fio:KEY=VAL,KEY=VAL,...: runs /usr/bin/fio with --KEY=VAL for each pair
# (name= is required, and the job's options follow it) on the second disk, /dev/vdb, unless filename= is
# given, and prints its JSON result between "HLFS-GUEST: fio-begin=NAME" and
# "HLFS-GUEST: fio-end=NAME" lines (bench/report.sh parses them); fio's
# stderr (verify failures, say) is printed before them.
# fio-stream:...: the same job, but fio writes straight to the console
# (terse lines, a status line every 250 ms, nothing buffered in the guest)
# between "HLFS-GUEST: fio-stream-begin=NAME" and "fio-stream-end=NAME rc=N":
# a harness that kills QEMU mid-job reads how far fio got
# (tests/crash/guest_fio_crash.py).
run_fio() {
    spec=$1 mode=$2
    name=""
    set --
    IFS=','
    for kv in $spec; do
        case "$kv" in
            name=*) name="${kv#name=}"; continue ;;
            filename=*) dev="${kv#filename=}" ;;
        esac
        set -- "$@" "--$kv"
    done
    IFS=';'
    [ -n "$name" ] || { say "error=fio-no-name"; return; }
    set -- "--name=$name" "$@" # job options follow the job's name
    case "$spec" in *filename=*) ;; *) dev=/dev/vdb; set -- "$@" "--filename=$dev" ;; esac
    # The second virtio disk may still be probing when init starts.
    i=0
    while [ ! -b "$dev" ] && [ ! -f "$dev" ] && [ $i -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    [ -e "$dev" ] || { say "error=fio-no-device:$dev"; return; }
    if [ "$mode" = stream ]; then
        say "fio-stream-begin=$name"
        rc=0
        fio --output-format=terse --status-interval=250ms "$@" || rc=$?
        say "fio-stream-end=$name rc=$rc"
        [ $rc = 0 ] || say "error=fio-failed:$name"
        return
    fi
    rc=0
    out=$(fio --output-format=json "$@" 2>/tmp/fio.err) || rc=$?
    cat /tmp/fio.err
    if [ $rc = 0 ]; then
        say "fio-begin=$name"
        printf '%s\n' "$out"
        say "fio-end=$name"
    else
        printf '%s\n' "$out"
        say "error=fio-failed:$name"
    fi
}

run_one() {
    case "$1" in
        write:*)
            token="${1#write:}"
            if put_file "$MARKER" "$token"; then
                say "wrote=$token"
            else
                say "error=write-failed"
            fi
            ;;
        fill:*)
            # N MiB of random data, to check data integrity across
            # snapshots/clones; its checksum is printed on every later boot.
            mib="${1#fill:}"
            if dd if=/dev/urandom of="$FILL.tmp" bs=1048576 count="$mib" 2>/dev/null &&
                sync && mv "$FILL.tmp" "$FILL" && sync; then
                sum=$(sha256sum "$FILL")
                say "filled=$mib sha256=${sum%% *}"
            else
                rm -f "$FILL.tmp"
                say "error=fill-failed"
            fi
            ;;
        rm-fill)
            rm -f "$FILL" && sync && say "removed=fill"
            ;;
        fio:*)
            run_fio "${1#fio:}" json
            ;;
        fio-stream:*)
            run_fio "${1#fio-stream:}" stream
            ;;
        count:*)
            # A counter that lives only in this shell's memory, printed as
            # "HLFS-GUEST: count=N" every MS milliseconds until the VM is
            # stopped: savevm/loadvm and migration tests read it back.
            ms=${1#count:}
            i=0
            while :; do
                i=$((i + 1))
                say "count=$i"
                usleep $((ms * 1000)) 2>/dev/null || sleep 1
            done
            ;;
        "") ;;
        *) say "error=unknown-cmd:$1" ;;
    esac
}

# Several commands may be joined with ';' (tokens contain no ';' or spaces).
IFS=';'
set -f
for c in $cmd; do
    run_one "$c"
done
unset IFS
set +f

sync
# Read-only remount flushes the journal so the image is clean when QEMU exits.
mount -o remount,ro / 2>/dev/null || say "error=remount-ro-failed"
sync
read -r up _ </proc/uptime
say "uptime=$up"
say poweroff
poweroff -f
reboot -f # with -no-reboot QEMU exits on reboot too
sleep 10
