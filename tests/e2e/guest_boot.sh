#!/usr/bin/env bash
# A real Linux guest boots from an hlfs volume through QEMU and its writes
# land where the guide says: SeaBIOS -> SYSLINUX -> Debian kernel -> ext4
# root all read through the hlfs driver (-drive ...,if=virtio); what the
# guest writes is on the volume after it powers off; booting VOL%SNAP
# read-write shows the snapshot's state and keeps the replaced head as
# snapshot pre-revert-N; a clone of a snapshot boots, diverges, and leaves
# the base snapshot as it was; the guide's install line (-hda ... -boot d
# -m 512 -no-acpi) boots the same volume through IDE
# and the guest writes its marker there too.
# Markers are checked twice: on the guest's serial console and offline
# (hlfs export + tests/guest/read-marker.sh, e2fsck on the export).
# HLFS_GUEST_BOOT_ROOT=URI-DIR (an hdfs:// directory, say) puts the volumes
# there instead of in a local temporary directory, and adds a clone of a
# local base into it (tests/e2e/hdfs_guest.sh).
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
e2e_init
qemu_init

T=$E2E_WORK
ROOT=${HLFS_GUEST_BOOT_ROOT:-local://$T}
VM=hlfs:$ROOT/vm
VM2=hlfs:$ROOT/vm2
if [ "$ROOT" != "local://$T" ]; then
    trap '"$HLFS_CLI" delete "$ROOT/vm3" >/dev/null 2>&1; "$HLFS_CLI" delete "$ROOT/vm2" >/dev/null 2>&1
        "$HLFS_CLI" delete "$ROOT/vm" >/dev/null 2>&1; e2e_cleanup' EXIT
fi
GUEST=$HLFS_ROOT/tests/guest
ACCEL=$(guest_accel)
BOOT_TIMEOUT=${HLFS_BOOT_TIMEOUT:-150}

# The guest image (cached; the first build needs root and apt-get, ~25 s).
if ! DISK=$("$GUEST/build-guest.sh" 2>"$T/build-guest.err" | tail -n1) || [ ! -f "$DISK" ]; then
    cat "$T/build-guest.err" >&2
    fail "tests/guest/build-guest.sh failed"
fi
ROOT_SECTOR=$(sfdisk -d "$DISK" | sed -n 's/.*start= *\([0-9][0-9]*\),.*type=83.*/\1/p' | head -1)
[ -n "$ROOT_SECTOR" ] || fail "no Linux partition in $DISK"
log "guest disk $DISK, accel $ACCEL"

# boot NAME DRIVE CMD: boots the guest once via tests/guest/run-guest.sh with
# -drive DRIVE (and fw_cfg command CMD unless empty); the console goes to
# $T/NAME.log. run-guest.sh exits 0 only on a clean power-off without a
# guest error line.
boot() {
    local name=$1 drive=$2 cmd=$3 args=() start
    [ -n "$cmd" ] && args=(-c "$cmd")
    start=$(date +%s)
    HLFS_GUEST_ACCEL=$ACCEL "$GUEST/run-guest.sh" -q "$QEMU_BIN/qemu-system-x86_64" \
        -D "$drive" "${args[@]}" -l "$T/$name.log" -t "$BOOT_TIMEOUT" 2>"$T/$name.err" ||
        fail "boot '$name' (-drive $drive${cmd:+, cmd $cmd}) failed:
$(cat "$T/$name.err")
--- serial console ---
$(tail -c 3000 "$T/$name.log")"
    log "boot '$name' took $(($(date +%s) - start)) s"
}
# console NAME LINE: the guest printed "HLFS-GUEST: LINE" in boot NAME.
console() {
    grep -aEq "HLFS-GUEST: $2"$'\r?$' "$T/$1.log" || fail "boot '$1': no 'HLFS-GUEST: $2' on the console:
$(grep -a 'HLFS-GUEST' "$T/$1.log")"
}
# marker URI EXPECTED: the marker file in URI (a volume or VOL%SNAP), read
# offline from an export; also checks the exported root fs with e2fsck.
marker() {
    guest_marker "$1" "$2" "$ROOT_SECTOR"
    log "ok: marker in $1 is '$2', fs clean"
}

# --- import the disk (seed form) and boot it --------------------------------
must "convert guest disk into hlfs" qemu-img convert "$DISK" "$VM" >/dev/null
out=$(must "compare" qemu-img compare "$DISK" "$VM")
grep -q 'Images are identical' <<<"$out" || fail "imported volume differs from the disk: $out"

boot first "file=$VM,if=virtio" write:first
console first 'marker=NONE'
console first 'wrote=first'
marker "$ROOT/vm" first

must "snapshot s1" qemu-img snapshot -c s1 "$VM" >/dev/null

boot second "file=$VM,if=virtio" write:second
console second 'marker=first'
console second 'wrote=second'
marker "$ROOT/vm" second
marker "$ROOT/vm%s1" first

# --- boot from the snapshot (seed: -drive file=VOL%snapshot1,if=virtio) ----------
# Read-write, as the seed does: the volume reverts to s1, the head that had
# "second" is kept as snapshot pre-revert-N.
boot from-s1 "file=$VM%s1,if=virtio" ""
console from-s1 'marker=first'
console from-s1 'cmd=NONE'
list=$(must "snapshot -l" qemu-img snapshot -l "$VM")
pre=$(awk '$2 ~ /^pre-revert-[0-9]+$/ { print $2 }' <<<"$list")
[ "$(wc -w <<<"$pre")" = 1 ] || fail "expected one pre-revert-N snapshot after booting %s1:
$list"
"$HLFS_CLI" snapshot list "$ROOT/vm" | grep -w -- "$pre" >/dev/null ||
    fail "hlfs snapshot list does not show $pre"
marker "$ROOT/vm%$pre" second
marker "$ROOT/vm" first
marker "$ROOT/vm%s1" first

# --- clone a snapshot (seed form) and boot the clone -------------------------------
must "snapshot s2" qemu-img snapshot -c s2 "$VM" >/dev/null
must "create clone target" qemu-img create -f hlfs "$VM2" 64M >/dev/null
must "clone" qemu-img create -b "$VM%s2" "$VM2" >/dev/null
boot clone "file=$VM2,if=virtio" write:clone
console clone 'marker=first'
console clone 'wrote=clone'
marker "$ROOT/vm2" clone
marker "$ROOT/vm%s2" first
marker "$ROOT/vm" first

# --- -hda (seed: qemu-system-x86_64 -hda hlfs:... -boot d -m 512 -no-acpi) --------
# The guide's install line, minus its ISO: SeaBIOS finds no CD, boots the
# volume from the IDE disk, SYSLINUX loads the kernel and initrd from it,
# and the guest (ata_piix, root by label) mounts its root over IDE and
# reports the clone's marker. Without ACPI the guest finds no fw_cfg command
# and cannot power the VM off, so QEMU is stopped once the guest says it is
# done.
start=$(date +%s)
read -ra accel_args <<<"$(guest_accel_args)"
"$QEMU_BIN/qemu-system-x86_64" -hda "$VM2" -boot d -m 512 -no-acpi "${accel_args[@]}" \
    -display none -nic none -no-reboot -monitor none -serial "file:$T/noacpi.log" \
    </dev/null >"$T/noacpi.err" 2>&1 &
qpid=$!
E2E_PIDS+=("$qpid")
deadline=$(($(date +%s) + BOOT_TIMEOUT))
until grep -aq 'HLFS-GUEST: poweroff' "$T/noacpi.log" 2>/dev/null; do
    kill -0 "$qpid" 2>/dev/null || fail "-no-acpi boot: QEMU exited early:
$(cat "$T/noacpi.err")
--- serial console ---
$(tail -c 3000 "$T/noacpi.log" 2>/dev/null)"
    [ "$(date +%s)" -lt "$deadline" ] || fail "-no-acpi boot: no poweroff within ${BOOT_TIMEOUT}s:
$(tail -c 3000 "$T/noacpi.log")"
    sleep 1
done
kill "$qpid" 2>/dev/null || true
wait "$qpid" 2>/dev/null || true
log "boot 'noacpi' took $(($(date +%s) - start)) s"
console noacpi 'boot'
console noacpi 'marker=clone'

# --- -hda with a command: the guest writes through IDE -----------------------
start=$(date +%s)
rc=0
timeout "$BOOT_TIMEOUT" "$QEMU_BIN/qemu-system-x86_64" -m 256 "${accel_args[@]}" \
    -display none -nic none -no-reboot -monitor none -serial "file:$T/hda.log" \
    -hda "$VM2" -fw_cfg name=opt/hlfs/cmd,string=write:hda </dev/null >"$T/hda.err" 2>&1 || rc=$?
[ $rc = 0 ] || fail "-hda boot: QEMU exited $rc:
$(cat "$T/hda.err")
--- serial console ---
$(tail -c 3000 "$T/hda.log")"
log "boot 'hda' took $(($(date +%s) - start)) s"
grep -aq 'SYSLINUX' "$T/hda.log" || fail "-hda boot: SYSLINUX did not start:
$(tail -c 3000 "$T/hda.log")"
console hda 'poweroff'
console hda 'boot'
console hda 'marker=clone'
console hda 'wrote=hda'
marker "$ROOT/vm2" hda

# --- a clone in ROOT of a base on the local disk (the seed's "B") -------------
if [ "$ROOT" != "local://$T" ]; then
    BASE=hlfs:local://$T/base
    must "local base" qemu-img convert "$DISK" "$BASE" >/dev/null
    must "local base snapshot" qemu-img snapshot -c gold "$BASE" >/dev/null
    must "clone target" qemu-img create -f hlfs "hlfs:$ROOT/vm3" 64M >/dev/null
    must "clone of the local base" qemu-img create -b "$BASE%gold" "hlfs:$ROOT/vm3" >/dev/null
    boot cross "file=hlfs:$ROOT/vm3,if=virtio" write:cross
    console cross 'marker=NONE'
    console cross 'wrote=cross'
    marker "$ROOT/vm3" cross
    marker "local://$T/base%gold" NONE
fi

log "passed"
