#!/usr/bin/env bash
# virsh migrate --live of a running domain on an HLFS volume between two
# libvirt daemons acting as two hosts (patched libvirt 11.3.0): each daemon
# runs in a network namespace of its own (tests/lib/netns.sh: own address,
# own host name) with its own host_uuid, /run/libvirt and state directories;
# both see the same pool directory, declared shared with qemu.conf's
# shared_filesystems. The test guest (imported with hlfs import, direct
# kernel boot, fw_cfg fill:4;count:200) counts in memory on the serial console:
#  - migrate --live A -> B: the domain runs on B (its QEMU in B's namespace,
#    none left in A's), is gone from A, the volume's write lock names B's host
#    name, and the counter goes on without a new boot;
#  - migrate --live B -> A: the same back;
#  - the guest's data: at boot it wrote 4 MiB of random data (fill:4); after
#    the two moves a boot by QEMU alone reads the file back with the same
#    sha256, and hlfs fsck passes.
# Root only; exit 77 where network namespaces cannot be made.
E2E_NAME=libvirt_migrate_two_hosts
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
[ "$(id -u)" = 0 ] || skip "libvirtd's system mode needs root"
e2e_init
qemu_init
# shellcheck source=../lib/netns.sh
. "$HLFS_ROOT/tests/lib/netns.sh"

T=$E2E_WORK
# shellcheck source=../lib/libvirt-e2e.sh
. "$HLFS_ROOT/tests/lib/libvirt-e2e.sh"
t0=$(date +%s)

libvirt_prefix
libvirt_guest

D=hmt-$(($$ % 10000))
libvirt_check_sock "$D"

LVD_PIDS=()
cleanup() {
    set +e
    for h in a b; do
        [ -S "$T/lvd-$h/run/libvirt-sock" ] &&
            "$PREFIX/bin/virsh" -q -c "qemu+unix:///system?socket=$T/lvd-$h/run/libvirt-sock" destroy "$D" >/dev/null 2>&1
    done
    for p in "${LVD_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${LVD_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
    netns_teardown
    e2e_cleanup
}
trap cleanup EXIT
netns_setup || { rc=$?; [ $rc = 77 ] && skip "$NETNS_ERROR"; fail "$NETNS_ERROR"; }

POOLDIR=$T/pool
mkdir -p "$POOLDIR" /run/libvirt
# start_host a|b: a private libvirtd on that host (as tests/lib/libvirtd.sh,
# plus the network/UTS namespace, host_uuid and shared_filesystems)
start_host() {
    local h=$1 dir=$T/lvd-$1 i
    mkdir -p "$dir/run" "$dir/etc/storage/autostart" "$dir/etc/qemu/autostart" \
        "$dir/etc/secrets" "$dir/run-libvirt" "$dir/var"
    cp -p "$PREFIX"/etc/libvirt/*.conf "$dir/etc/"
    cp -a "$PREFIX/var/." "$dir/var/"
    printf 'shared_filesystems = [ "%s" ]\n' "$POOLDIR" >>"$dir/etc/qemu.conf"
    cat >"$dir/libvirtd.conf" <<EOF
unix_sock_dir = "$dir/run"
log_outputs = "3:file:$dir/libvirtd.log"
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
EOF
    netns_argv "$h"
    # shellcheck disable=SC2016 # expanded by the inner bash
    HLFS_CLI=$HLFS_CLI "${NETNS_ARGV[@]}" unshare --mount --propagation private -- bash -c '
        set -e
        mount --bind "$1/run-libvirt" /run/libvirt
        mount --bind "$1/etc" "$2/etc/libvirt"
        mount --bind "$1/var" "$2/var"
        exec "$2/sbin/libvirtd" -f "$1/libvirtd.conf" -p "$1/libvirtd.pid"
    ' libvirtd "$dir" "$PREFIX" >"$dir/out" 2>&1 &
    LVD_PIDS+=($!)
    for i in $(seq 150); do
        "$PREFIX/bin/virsh" -q -c "qemu+unix:///system?socket=$dir/run/libvirt-sock" \
            list >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    fail "libvirtd on host $h did not start: $(cat "$dir/out" "$dir/libvirtd.log" 2>/dev/null | tail -n 20)"
}
start_host a
start_host b
URI_A="qemu+unix:///system?socket=$T/lvd-a/run/libvirt-sock"
URI_B="qemu+unix:///system?socket=$T/lvd-b/run/libvirt-sock"
VA() { "$PREFIX/bin/virsh" -q -c "$URI_A" "$@"; }
VB() { "$PREFIX/bin/virsh" -q -c "$URI_B" "$@"; }
ok "two libvirt daemons: host a ($NETNS_HOSTNAME_A, $NETNS_ADDR_A), host b ($NETNS_HOSTNAME_B, $NETNS_ADDR_B)"

VOL=local://$POOLDIR/vm1
"$HLFS_CLI" import "$DISK" "$VOL" >/dev/null || fail "hlfs import of the guest disk"
CONSOLE=$T/console.log
: >"$CONSOLE"
cat >"$T/dom.xml" <<EOF
<domain type='$DOMTYPE'>
  <name>$D</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <sysinfo type='fwcfg'><entry name='opt/hlfs/cmd'>fill:4;count:200</entry></sysinfo>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$KERNEL</kernel>
    <initrd>$INITRD</initrd>
    <cmdline>$CMDLINE</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$QEMU_BIN/qemu-system-x86_64</emulator>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source protocol='hlfs' name='$VOL'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'><source path='$CONSOLE' append='on'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
VA create "$T/dom.xml" >/dev/null || fail "virsh create on host a: $(tail -n 5 "$T/lvd-a/libvirtd.log")"

counts() { tail -c +$(( ${1:-0} + 1 )) "$CONSOLE" | tr -d '\r' | sed -n 's/.*HLFS-GUEST: count=\([0-9][0-9]*\)$/\1/p'; }
last_count() { counts "${1:-0}" | tail -n1; }
wait_count() {
    local min=$1 deadline=$(( $(date +%s) + $2 )) c
    while :; do
        c=$(last_count "${3:-0}")
        [ -n "$c" ] && [ "$c" -ge "$min" ] && return 0
        [ "$(date +%s)" -lt "$deadline" ] || fail "no count >= $min within $2 s (last '${c}'); console tail:
$(tail -c 1500 "$CONSOLE")"
        sleep 0.2
    done
}
wait_count 10 "${HLFS_BOOT_TIMEOUT:-150}"
FILLED=$(tr -d '\r' <"$CONSOLE" | sed -n 's/^HLFS-GUEST: filled=4 sha256=\([0-9a-f]*\)$/\1/p' | head -n1)
[ -n "$FILLED" ] || fail "the guest did not write its 4 MiB fill file: $(tail -c 1500 "$CONSOLE")"
ok "$D running on host a, counting: $(last_count); it wrote 4 MiB of random data (sha256 ${FILLED:0:16}...)"

# qemu_in NS: a qemu-system process runs in network namespace NS
qemu_in() {
    local p
    for p in $(ip netns pids "$1" 2>/dev/null); do
        case "$(cat "/proc/$p/comm" 2>/dev/null)" in qemu-system*) return 0 ;; esac
    done
    return 1
}
# migrate FROM TO: virsh migrate --live, then checks where the domain runs
migrate() {
    local from=$1 to=$2 furi turi taddr before off s took tns fns tname writer
    case $from in a) furi=$URI_A turi=$URI_B taddr=$NETNS_ADDR_B ;; b) furi=$URI_B turi=$URI_A taddr=$NETNS_ADDR_A ;; esac
    before=$(last_count)
    off=$(stat -c %s "$CONSOLE")
    s=$(date +%s)
    "$PREFIX/bin/virsh" -q -c "$furi" migrate --live "$D" "$turi" --migrateuri "tcp://$taddr" \
        >"$T/migrate.out" 2>&1 || fail "virsh migrate --live $from -> $to: $(cat "$T/migrate.out")
source log: $(tail -n 5 "$T/lvd-$from/libvirtd.log")
destination log: $(tail -n 5 "$T/lvd-$to/libvirtd.log")"
    took=$(( $(date +%s) - s ))
    [ "$("$PREFIX/bin/virsh" -q -c "$turi" domstate "$D")" = running ] ||
        fail "$D is not running on host $to after the migration"
    "$PREFIX/bin/virsh" -q -c "$furi" domstate "$D" >/dev/null 2>&1 &&
        fail "$D still exists on host $from after the migration"
    # QEMU runs in the destination's network namespace only, and the
    # volume's write lock names the destination's host name
    case $to in a) tns=$NETNS_A fns=$NETNS_B tname=$NETNS_HOSTNAME_A ;; b) tns=$NETNS_B fns=$NETNS_A tname=$NETNS_HOSTNAME_B ;; esac
    qemu_in "$tns" || fail "no QEMU in host $to's namespace after the migration"
    qemu_in "$fns" && fail "a QEMU still runs in host $from's namespace after the migration"
    writer=$("$HLFS_CLI" info --output json "$VOL" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("writer") or "")')
    grep -qF "$tname" <<<"$writer" || fail "the write lock of $VOL is held by '$writer', not by host $to ($tname)"
    wait_count $((before + 10)) 60
    tail -c +$((off + 1)) "$CONSOLE" | grep -aq 'HLFS-GUEST: boot' && fail "the guest booted again after migrating to host $to"
    ok "migrate --live $from -> $to in ${took}s: running on $to, gone from $from, lock: $writer; the counter went on ($before -> $(last_count)), no new boot"
}
migrate a b
migrate b a
VA destroy "$D" >/dev/null || fail "destroy on host a"
"$HLFS_CLI" fsck "$VOL" >/dev/null || fail "hlfs fsck $VOL"
# The guest's data after two moves: one more boot, by QEMU alone, reads
# the fill file back (its init prints the file's sha256 at boot).
# shellcheck disable=SC2046 # word splitting of the accelerator flags is wanted
timeout 300 "$QEMU_BIN/qemu-system-x86_64" -m 256 $(guest_accel_args) -display none -nic none \
    -no-reboot -monitor none -serial "file:$T/check.log" -drive "file=hlfs:$VOL,if=virtio" \
    -kernel "$KERNEL" -initrd "$INITRD" -append "$CMDLINE" </dev/null >"$T/check.err" 2>&1 ||
    fail "the check boot failed: $(cat "$T/check.err")"
got=$(tr -d '\r' <"$T/check.log" | sed -n 's/^HLFS-GUEST: fill-sha256=\([0-9a-f]*\)$/\1/p' | head -n1)
[ "$got" = "$FILLED" ] || fail "the guest's data after the migrations: fill file sha256 '$got', written as '$FILLED'"
ok "after a -> b -> a the guest's 4 MiB fill file reads back (sha256 matches)"
log "passed in $(( $(date +%s) - t0 )) s"
