#!/usr/bin/env bash
# Domains with HLFS disks through our patched libvirt 11.3.0 (libvirt-pool/),
# against a private libvirtd started from the build prefix:
#  - an hlfs pool; the test guest (tests/guest) uploaded into volume vm1 with
#    vol-upload;
#  - <disk type='network'><source protocol='hlfs' name='local:///...'/> boots
#    the guest (virsh start; SeaBIOS -> SYSLINUX -> Linux, serial console to a
#    file, command via <sysinfo type='fwcfg'> opt/hlfs/cmd); QEMU's command
#    line has -blockdev {"driver":"hlfs","uri":...}; the marker the guest
#    wrote is on the volume (hlfs export + read-marker.sh);
#  - snapshot-create-as / snapshot-list / snapshot-revert / snapshot-delete of
#    the shut-off domain are HLFS snapshots; after the revert the guest sees
#    the snapshot's marker, not the one written after it;
#  - <disk type='volume'><source pool=... volume=.../> boots the same way;
#  - hot-plug: attach-device / attach-disk of hlfs disks into a running
#    (paused) domain, domblklist + HMP 'info block', detach-disk;
#  - refused with a clear message: external (--disk-only) snapshots, an HLFS
#    snapshot opened read-write, a bad URI, a snapshot name HLFS cannot take
#    (snapshots of running domains: tests/e2e/libvirt_snapshot_running.sh);
#  - vol-clone of vm1 boots, diverges, and vm1's snapshot under the clone
#    stays byte-identical (hlfs export before/after).
# Root only (libvirtd's system mode); exit 77 otherwise.
E2E_NAME=libvirt_domain
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
[ "$(id -u)" = 0 ] || skip "libvirtd's system mode needs root"
e2e_init
qemu_init

T=$E2E_WORK
GUEST=$HLFS_ROOT/tests/guest
BOOT_TIMEOUT=${HLFS_BOOT_TIMEOUT:-150}
# shellcheck source=../lib/libvirt-e2e.sh
. "$HLFS_ROOT/tests/lib/libvirt-e2e.sh"

# $HLFS_LIBVIRT_PREFIX: an installed build to use instead of libvirt-pool/build.sh's
libvirt_prefix
libvirt_guest

# --- private libvirtd ---------------------------------------------------------
POOL=hlfs-dom-$$          # unique: configs persist in the prefix
POOLDIR=$T/pool
D1=hd1-$(($$ % 10000))
D2=hd2-$(($$ % 10000))
libvirt_check_sock "$D1"
dom_cleanup() {
    set +e
    if [ -n "$LIBVIRTD_PID" ]; then
        for d in "$D1" "$D2"; do
            V destroy "$d" >/dev/null 2>&1
            V undefine "$d" --snapshots-metadata >/dev/null 2>&1
        done
        V pool-destroy "$POOL" >/dev/null 2>&1
        V pool-undefine "$POOL" >/dev/null 2>&1
    fi
    e2e_cleanup
}
libvirt_start dom_cleanup

# --- pool + guest volume -----------------------------------------------------
cat >"$T/pool.xml" <<EOF
<pool type='hlfs'>
  <name>$POOL</name>
  <source><name>local://$POOLDIR</name></source>
</pool>
EOF
V pool-define "$T/pool.xml" >/dev/null || vfail "pool-define"
V pool-build "$POOL" >/dev/null || vfail "pool-build"
V pool-start "$POOL" >/dev/null || vfail "pool-start"
V vol-create-as "$POOL" vm1 "$(stat -c %s "$DISK")" --format raw >/dev/null || vfail "vol-create-as vm1"
V vol-upload --pool "$POOL" vm1 "$DISK" || vfail "vol-upload of the guest disk"
"$HLFS_CLI" export "local://$POOLDIR/vm1" "$T/vm1.raw" >/dev/null
cmp "$DISK" "$T/vm1.raw" || fail "the uploaded volume differs from the guest disk"
rm -f "$T/vm1.raw"
ok "pool $POOL; guest disk uploaded into vm1 (vol-upload, byte-exact)"

# --- domain XML ----------------------------------------------------------------
# disk_net URI [EXTRA]: a network/hlfs disk vda; disk_vol VOLUME: type='volume'
disk_net() {
    printf "<disk type='network' device='disk'><driver name='qemu' type='raw'/><source protocol='hlfs' name='%s'/><target dev='vda' bus='virtio'/>%s</disk>" "$1" "${2:-}"
}
disk_vol() {
    printf "<disk type='volume' device='disk'><driver name='qemu' type='raw'/><source pool='%s' volume='%s'/><target dev='vda' bus='virtio'/></disk>" "$POOL" "$1"
}
# define NAME DISKXML CMD LOG: (re)defines domain NAME (same UUID each time)
declare -A UUIDS
define() {
    local name=$1 disk=$2 cmd=$3 log=$4 sysinfo=""
    [ -n "${UUIDS[$name]:-}" ] || UUIDS[$name]=$(cat /proc/sys/kernel/random/uuid)
    [ -n "$cmd" ] && sysinfo="<sysinfo type='fwcfg'><entry name='opt/hlfs/cmd'>$cmd</entry></sysinfo>"
    cat >"$T/$name.xml" <<EOF
<domain type='$DOMTYPE'>
  <name>$name</name>
  <uuid>${UUIDS[$name]}</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  $sysinfo
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$QEMU_BIN/qemu-system-x86_64</emulator>
    $disk
    <serial type='file'><source path='$log'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
    V define "$T/$name.xml" >/dev/null || vfail "define $name"
}
# boot NAME LOG: virsh start, wait until the guest powered the domain off.
boot() {
    local name=$1 log=$2 start deadline
    : >"$log"
    start=$(date +%s)
    V start "$name" >/dev/null || vfail "virsh start $name"
    deadline=$((start + BOOT_TIMEOUT))
    while [ "$(V domstate "$name")" != "shut off" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "$name: not shut off after ${BOOT_TIMEOUT}s:
$(tail -c 2000 "$log")"
        sleep 1
    done
    grep -aq 'HLFS-GUEST: poweroff' "$log" || fail "$name: no clean guest poweroff:
$(tail -c 3000 "$log")"
    ! grep -a 'HLFS-GUEST: error=' "$log" || fail "$name: the guest reported an error"
    log "boot of $name took $(($(date +%s) - start)) s"
}
# console LOG LINE: the guest printed "HLFS-GUEST: LINE"
console() {
    grep -aEq "HLFS-GUEST: $2"$'\r?$' "$1" || fail "no 'HLFS-GUEST: $2' in $1:
$(grep -a 'HLFS-GUEST' "$1")"
}
# marker URI EXPECTED: the guest's marker file in the volume (or VOL%SNAP)
marker() {
    local got
    rm -f "$T/m.raw"
    "$HLFS_CLI" export "$1" "$T/m.raw" >/dev/null || fail "hlfs export $1"
    got=$("$GUEST/read-marker.sh" "$T/m.raw") || fail "read-marker.sh on $1"
    rm -f "$T/m.raw"
    [ "$got" = "$2" ] || fail "marker in $1 is '$got', expected '$2'"
}
# qemu_cmdline NAME: the QEMU command line of NAME's last start
# libvirtd_start gives the daemon its own PREFIX/var (see tests/lib/libvirtd.sh).
qemu_cmdline() { grep -a -- '-blockdev' "$(libvirtd_var_dir)/log/libvirt/qemu/$1.log" | tail -n1; }
hsnaps() { "$HLFS_CLI" snapshot list --output json "local://$POOLDIR/$1"; }

VM1=local://$POOLDIR/vm1

# --- network disk: boot, write a marker ----------------------------------------
define "$D1" "$(disk_net "$VM1")" write:first "$T/c1.log"
boot "$D1" "$T/c1.log"
console "$T/c1.log" boot
console "$T/c1.log" 'marker=NONE'
console "$T/c1.log" 'wrote=first'
qemu_cmdline "$D1" | grep "\"driver\":\"hlfs\",\"uri\":\"$VM1\"" >/dev/null ||
    fail "no -blockdev driver=hlfs in QEMU's command line: $(qemu_cmdline "$D1")"
marker "$VM1" first
ok "network disk: guest booted via virsh start ($DOMTYPE), wrote 'first'; -blockdev {\"driver\":\"hlfs\",\"uri\":\"$VM1\",...}"

# --- snapshots of the shut-off domain --------------------------------------------
V snapshot-create-as "$D1" s1 --description 'after first' >/dev/null || vfail "snapshot-create-as s1"
hsnaps vm1 | grep '"name": *"s1"' >/dev/null || fail "snapshot-create-as made no HLFS snapshot s1: $(hsnaps vm1)"
V snapshot-list "$D1" --name | grep -x s1 >/dev/null || fail "snapshot-list does not show s1"
V snapshot-info "$D1" s1 | grep -E 'Location: *internal' >/dev/null || fail "s1 is not an internal snapshot"
ok "snapshot-create-as $D1 s1: HLFS snapshot s1 of vm1; snapshot-list/snapshot-info show it (internal)"
expect_fail "a snapshot name HLFS cannot take is refused" 'not a valid HLFS snapshot name' \
    snapshot-create-as "$D1" 'bad name'
hsnaps vm1 | grep 'bad name' >/dev/null && fail "the refused snapshot exists"

define "$D1" "$(disk_net "$VM1")" write:second "$T/c2.log"
boot "$D1" "$T/c2.log"
console "$T/c2.log" 'marker=first'
console "$T/c2.log" 'wrote=second'
marker "$VM1" second
marker "$VM1%s1" first
ok "after s1 the guest wrote 'second'; s1 still holds 'first'"

V snapshot-revert "$D1" s1 || vfail "snapshot-revert s1"
marker "$VM1" first
hsnaps vm1 | grep '"name": *"pre-revert-' >/dev/null || fail "the reverted head was not kept as pre-revert-N"
# the revert restored the definition saved with s1 (cmd write:first): boot
# without a command to see what the guest finds
define "$D1" "$(disk_vol vm1)" "" "$T/c3.log"
boot "$D1" "$T/c3.log"
console "$T/c3.log" 'marker=first'
console "$T/c3.log" 'cmd=NONE'
qemu_cmdline "$D1" | grep "\"driver\":\"hlfs\",\"uri\":\"$VM1\"" >/dev/null ||
    fail "volume disk: no -blockdev driver=hlfs: $(qemu_cmdline "$D1")"
ok "snapshot-revert s1: the guest sees 'first' again ('second' kept as HLFS snapshot pre-revert-N)"
ok "volume disk <source pool='$POOL' volume='vm1'/> booted as -blockdev {\"driver\":\"hlfs\",\"uri\":\"$VM1\"}"

V snapshot-create-as "$D1" s2 >/dev/null || vfail "snapshot-create-as s2 (volume disk)"
hsnaps vm1 | grep '"name": *"s2"' >/dev/null || fail "no HLFS snapshot s2"
# an HLFS snapshot a clone depends on cannot go: the command fails, libvirt keeps it
"$HLFS_CLI" clone "$VM1%s2" "local://$POOLDIR/dep" >/dev/null || fail "hlfs clone vm1%s2"
expect_fail "snapshot-delete of a snapshot with clones fails" 'has clones' snapshot-delete "$D1" s2
V snapshot-list "$D1" --name | grep -x s2 >/dev/null || fail "a failed snapshot-delete dropped s2 from snapshot-list"
"$HLFS_CLI" delete "local://$POOLDIR/dep" >/dev/null || fail "hlfs delete dep"
V snapshot-delete "$D1" s1 >/dev/null || vfail "snapshot-delete s1"
hsnaps vm1 | grep '"name": *"s1"' >/dev/null && fail "snapshot-delete left HLFS snapshot s1"
V snapshot-list "$D1" --name | grep -x s1 >/dev/null && fail "snapshot-list still shows s1"
V snapshot-delete "$D1" s2 >/dev/null || vfail "snapshot-delete s2"
hsnaps vm1 | grep '"name": *"s2"' >/dev/null && fail "snapshot-delete left HLFS snapshot s2"
ok "snapshot-create-as on the volume disk, snapshot-delete s1 + s2 remove the HLFS snapshots"

# --- errors for what is not supported ----------------------------------------------
cat >"$T/bad-snap.xml" <<EOF
<domain type='$DOMTYPE'><name>hlfs-bad-$$</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type></os><devices><emulator>$QEMU_BIN/qemu-system-x86_64</emulator>
$(disk_net "$VM1%s1")</devices></domain>
EOF
expect_fail "an HLFS snapshot as a read-write disk is refused" 'can only be used read-only' define "$T/bad-snap.xml"
sed "s|$VM1%s1|local://$POOLDIR/../vm1|" "$T/bad-snap.xml" >"$T/bad-uri.xml"
expect_fail "a volume URI with '..' is refused" 'invalid HLFS volume URI' define "$T/bad-uri.xml"

# --- hot-plug into a running (paused) domain -----------------------------------------
# On the virtio-scsi bus: QEMU unplugs a SCSI disk at once, while a virtio-blk
# PCI device would wait for the (paused, or long powered-off) guest to eject it.
V vol-create-as "$POOL" hot 16M --format raw >/dev/null || vfail "vol-create-as hot"
V vol-create-as "$POOL" hot2 8M --format raw >/dev/null || vfail "vol-create-as hot2"
define "$D1" "$(disk_net "$VM1")" "" "$T/c4.log"
V start "$D1" --paused >/dev/null || vfail "start --paused"
cat >"$T/hot.xml" <<EOF
<disk type='network' device='disk'>
  <driver name='qemu' type='raw'/>
  <source protocol='hlfs' name='local://$POOLDIR/hot'/>
  <target dev='sda' bus='scsi'/>
</disk>
EOF
V attach-device "$D1" "$T/hot.xml" --live >/dev/null || vfail "attach-device sda"
V domblklist "$D1" | grep -E "^ *sda +local://$POOLDIR/hot$" >/dev/null || fail "domblklist lacks sda: $(V domblklist "$D1")"
V qemu-monitor-command "$D1" --hmp 'info block' >"$T/info-block" || vfail "HMP info block"
# "libvirt-N-storage: hlfs:local:///.../hot (hlfs)" + "Attached to: .../scsi0-0-0-0"
awk -v want="hlfs:local://$POOLDIR/hot (hlfs)" '
    index($0, want) { found = 1; next }
    found == 1 { if ($0 ~ /Attached to: .*scsi0-0-0-0/) ok = 1; found = 0 }
    END { exit !ok }' "$T/info-block" ||
    fail "HMP info block does not show the hlfs node of sda on scsi0-0-0-0: $(cat "$T/info-block")"
ok "attach-device: sda = local://$POOLDIR/hot in domblklist and in QEMU's 'info block'"
V attach-disk "$D1" "local://$POOLDIR/hot2" sdb --live --targetbus scsi --subdriver raw \
    --source-protocol hlfs >/dev/null || vfail "attach-disk sdb"
V domblklist "$D1" | grep -E "^ *sdb +local://$POOLDIR/hot2$" >/dev/null || fail "domblklist lacks sdb: $(V domblklist "$D1")"
V qemu-monitor-command "$D1" --hmp 'info block' | grep "local://$POOLDIR/hot2" >/dev/null ||
    fail "info block lacks hot2"
ok "attach-disk --source-protocol hlfs: sdb = local://$POOLDIR/hot2"
expect_fail "an external (--disk-only) snapshot of hlfs disks is refused" 'external \(overlay\) snapshots of HLFS disks are not supported' \
    snapshot-create-as "$D1" live2 --disk-only
V detach-disk "$D1" sda --live >/dev/null || vfail "detach-disk sda"
V detach-disk "$D1" sdb --live >/dev/null || vfail "detach-disk sdb"
V domblklist "$D1" | grep -E '^ *sd[ab] ' >/dev/null && fail "sda/sdb still in domblklist after detach-disk: $(V domblklist "$D1")"
V qemu-monitor-command "$D1" --hmp 'info block' | grep "local://$POOLDIR/hot" >/dev/null &&
    fail "QEMU still has the detached volumes"
V destroy "$D1" >/dev/null || vfail "destroy"
# the volumes are closed again: the CLI can open them read-write
"$HLFS_CLI" snapshot create "local://$POOLDIR/hot" after-detach >/dev/null ||
    fail "hot is still locked after detach + destroy"
ok "detach-disk sda + sdb: gone from domblklist and 'info block'; destroy"

# --- a clone boots, the base stays ---------------------------------------------------------
V vol-clone --pool "$POOL" vm1 vm1c >/dev/null || vfail "vol-clone"
base=$("$HLFS_CLI" info --output json "local://$POOLDIR/vm1c" | sed -n 's/.*"base": *"\([^"]*\)".*/\1/p')
[ -n "$base" ] || fail "vol-clone made no HLFS clone"
"$HLFS_CLI" export "$base" "$T/base-before.raw" >/dev/null
define "$D2" "$(disk_vol vm1c)" write:clone "$T/c5.log"
boot "$D2" "$T/c5.log"
console "$T/c5.log" 'marker=first'
console "$T/c5.log" 'wrote=clone'
marker "local://$POOLDIR/vm1c" clone
"$HLFS_CLI" export "$base" "$T/base-after.raw" >/dev/null
cmp "$T/base-before.raw" "$T/base-after.raw" || fail "the clone's base snapshot $base changed"
marker "$VM1" first
ok "vol-clone vm1 -> vm1c boots (marker 'first'), writes 'clone'; base $base byte-identical, vm1 still 'first'"

V undefine "$D2" >/dev/null || vfail "undefine $D2"
V undefine "$D1" >/dev/null || vfail "undefine $D1"
log "passed"
