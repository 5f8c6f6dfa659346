#!/usr/bin/env bash
# Snapshots of a RUNNING domain whose disk is an HLFS volume, through virsh on
# our private libvirtd (patched libvirt 11.3.0, libvirt-pool/ patch 0004):
#  - the test guest's disk imported into an hlfs volume (hlfs import), booted
#    by direct kernel boot with the fw_cfg command count:200 (a counter that
#    lives only in the guest's memory, "HLFS-GUEST: count=N" every 200 ms);
#  - snapshot-create-as on the running domain: an internal snapshot with
#    memory (QEMU's snapshot-save job on the hlfs node); snapshot-list and
#    snapshot-info show it (internal, state running); hlfs snapshot list shows
#    it with a VM state size that is not 0;
#  - the guest counts on; snapshot-revert: the domain is running again and the
#    first count after the revert is the saved one (+-1), with no new boot;
#  - snapshot-delete on the running domain removes the HLFS snapshot;
#  - refused with a clear error naming the fix: --disk-only (external
#    snapshot) of HLFS disks, and a snapshot with a raw file disk attached
#    next to the HLFS disk.
# Root only (libvirtd's system mode); exit 77 otherwise.
E2E_NAME=libvirt_snapshot_running
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
[ "$(id -u)" = 0 ] || skip "libvirtd's system mode needs root"
e2e_init
qemu_init

T=$E2E_WORK
# shellcheck source=../lib/libvirt-e2e.sh
. "$HLFS_ROOT/tests/lib/libvirt-e2e.sh"
t0=$(date +%s)

# $HLFS_LIBVIRT_PREFIX: an installed build to use instead of libvirt-pool/build.sh's
libvirt_prefix
libvirt_guest

# --- private libvirtd ---------------------------------------------------------
D=hsr-$(($$ % 10000))
libvirt_check_sock "$D"
dom_cleanup() {
    set +e
    libvirt_drop --snapshots-metadata "$D"
    e2e_cleanup
}
libvirt_start dom_cleanup

# --- volume + domain ------------------------------------------------------------
VOL=local://$T/pool/vm1
mkdir -p "$T/pool"
"$HLFS_CLI" import "$DISK" "$VOL" >/dev/null || fail "hlfs import of the guest disk"
CONSOLE=$T/console.log
: >"$CONSOLE"
cat >"$T/dom.xml" <<EOF
<domain type='$DOMTYPE'>
  <name>$D</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <sysinfo type='fwcfg'><entry name='opt/hlfs/cmd'>count:200</entry></sysinfo>
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
      <driver name='qemu' type='raw'/>
      <source protocol='hlfs' name='$VOL'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <serial type='file'><source path='$CONSOLE' append='on'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
V define "$T/dom.xml" >/dev/null || vfail "define $D"
V start "$D" >/dev/null || vfail "virsh start $D"

# counts [OFFSET]: the counter values of complete console lines from byte OFFSET
counts() { tail -c +$(( ${1:-0} + 1 )) "$CONSOLE" | tr -d '\r' | sed -n 's/.*HLFS-GUEST: count=\([0-9][0-9]*\)$/\1/p'; }
last_count() { counts "${1:-0}" | tail -n1; }
# wait_count MIN TIMEOUT [OFFSET]: until a count >= MIN appears after OFFSET
wait_count() {
    local min=$1 deadline=$(( $(date +%s) + $2 )) c
    while :; do
        c=$(last_count "${3:-0}")
        [ -n "$c" ] && [ "$c" -ge "$min" ] && return 0
        [ "$(date +%s)" -lt "$deadline" ] || fail "no count >= $min within $2 s (last '${c}'); console tail:
$(tail -c 1500 "$CONSOLE")"
        [ "$(V domstate "$D")" = running ] || fail "$D is '$(V domstate "$D")' waiting for count $min"
        sleep 0.2
    done
}
hsnaps() { "$HLFS_CLI" snapshot list --output json "$VOL"; }

wait_count 10 "${HLFS_BOOT_TIMEOUT:-150}"
ok "$D ($DOMTYPE) booted from the hlfs volume (direct kernel boot), counting: $(last_count)"

# --- snapshot-create-as on the running domain -------------------------------------
[ "$(V domstate "$D")" = running ] || fail "$D is not running"
c0=$(last_count)
s=$(date +%s)
V snapshot-create-as "$D" s1 --description 'running, with memory' >/dev/null || vfail "snapshot-create-as $D s1 (running)"
c1=$(last_count)
took=$(( $(date +%s) - s ))
[ "$(V domstate "$D")" = running ] || fail "$D is '$(V domstate "$D")' after snapshot-create-as, not running"
V snapshot-list "$D" --name | grep -x s1 >/dev/null || fail "snapshot-list does not show s1: $(V snapshot-list "$D")"
V snapshot-info "$D" s1 >"$T/info" || vfail "snapshot-info s1"
grep -Eq 'Location: *internal' "$T/info" || fail "s1 is not internal: $(cat "$T/info")"
grep -Eq 'State: *running' "$T/info" || fail "s1's state is not running: $(cat "$T/info")"
vmsize=$(hsnaps | python3 -c '
import json, sys
print(next((s["vm_state_size"] for s in json.load(sys.stdin) if s["name"] == "s1"), -1))') ||
    fail "hlfs snapshot list: $(hsnaps 2>&1)"
[ "$vmsize" -gt 0 ] || fail "HLFS snapshot s1 has no VM state (vm_state_size $vmsize): $(hsnaps)"
ok "snapshot-create-as $D s1 on the running domain in ${took}s (counter $c0..$c1): internal, state running; HLFS snapshot s1 with $vmsize bytes of VM state"

# --- snapshot-revert: running again, with the snapshot's memory ------------------
wait_count $((c1 + 15)) 60
before=$(last_count)
off=$(stat -c %s "$CONSOLE")
s=$(date +%s)
V snapshot-revert "$D" s1 || vfail "snapshot-revert $D s1"
took=$(( $(date +%s) - s ))
[ "$(V domstate "$D")" = running ] || fail "$D is '$(V domstate "$D")' after snapshot-revert, not running"
deadline=$(( $(date +%s) + 60 ))
while [ -z "$(counts "$off" | head -n1)" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "no count within 60 s of the revert; console tail:
$(tail -c 1500 "$CONSOLE")"
    sleep 0.2
done
first=$(counts "$off" | head -n1)
tail -c +$((off + 1)) "$CONSOLE" | grep -aq 'HLFS-GUEST: boot' && fail "the guest booted again after the revert (no memory state restored)"
[ "$first" -ge $((c0 - 1)) ] && [ "$first" -le $((c1 + 1)) ] ||
    fail "first count after the revert is $first; the snapshot was taken between counts $c0 and $c1 (the guest was at $before)"
wait_count $((first + 3)) 30 "$off"
ok "snapshot-revert s1 in ${took}s: running; the counter went on from $first (saved between $c0 and $c1; it was at $before), no new boot"

# --- refused cases ------------------------------------------------------------------
expect_fail "--disk-only (external) snapshot of a running domain with hlfs disks is refused" \
    'external \(overlay\) snapshots of HLFS disks are not supported; take an internal snapshot instead.*without --disk-only' \
    snapshot-create-as "$D" s2 --disk-only
truncate -s 8M "$T/extra.raw"
V attach-disk "$D" "$T/extra.raw" sda --live --targetbus scsi --subdriver raw >/dev/null ||
    vfail "attach-disk of a raw file"
expect_fail "a snapshot with a raw disk next to the hlfs disk is refused" \
    'internal snapshot for disk sda unsupported for storage type raw.*convert disk sda' \
    snapshot-create-as "$D" s3
V detach-disk "$D" sda --live >/dev/null || vfail "detach-disk sda"
V snapshot-list "$D" --name | grep -Ex 's[23]' >/dev/null && fail "a refused snapshot is in snapshot-list"
hsnaps | grep -E '"name": *"s[23]"' >/dev/null && fail "a refused snapshot exists in HLFS: $(hsnaps)"

# --- snapshot-delete on the running domain --------------------------------------------
V snapshot-delete "$D" s1 >/dev/null || vfail "snapshot-delete $D s1"
V snapshot-list "$D" --name | grep -x s1 >/dev/null && fail "snapshot-list still shows s1"
hsnaps | grep -E '"name": *"s1"' >/dev/null && fail "snapshot-delete left HLFS snapshot s1: $(hsnaps)"
[ "$(V domstate "$D")" = running ] || fail "$D is not running after snapshot-delete"
ok "snapshot-delete s1 on the running domain: gone from snapshot-list and from hlfs snapshot list"

V destroy "$D" >/dev/null || vfail "destroy"
V undefine "$D" >/dev/null || vfail "undefine"
"$HLFS_CLI" fsck "$VOL" >/dev/null || fail "hlfs fsck $VOL"
log "passed in $(( $(date +%s) - t0 )) s"
