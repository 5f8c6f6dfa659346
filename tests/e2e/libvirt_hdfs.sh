#!/usr/bin/env bash
# An hlfs storage pool whose directory is on the real HDFS named by
# HLFS_TEST_HDFS=hdfs://namenode:port/dir (skipped, exit 77, without it;
# scripts/test.sh starts a MiniDFSCluster from tests/hdfs and sets it, with
# HADOOP_CONF_DIR), through our patched libvirt 11.3.0 and a private libvirtd:
#  - pool-start of a directory that does not exist yet fails, naming
#    pool-build; pool-build makes it (hlfs mkdir), pool-start/info/refresh;
#  - vol-create-as, vol-upload of the test guest (byte-exact on HDFS),
#    vol-list/vol-info, pool-info's available space never wraps below 0;
#  - a domain with <disk type='volume'> from the pool boots the guest from
#    HDFS (QEMU gets -blockdev {"driver":"hlfs","uri":"hdfs://host:port/..."}),
#    which writes its marker;
#  - vol-clone of that volume; the directory as a second pool named
#    hdfs:///path lists both (the CLI resolves it with libvirtd's
#    HADOOP_CONF_DIR); a second domain boots from the clone through
#    a protocol='hlfs' network disk named hdfs:///path (the default
#    filesystem: QEMU resolves it with the HADOOP_CONF_DIR libvirtd passes
#    it), sees the first boot's marker and writes its own; the source keeps
#    its marker;
#  - vol-delete refused while the clone exists, pool-delete refused while
#    volumes exist; vol-delete, pool-destroy, pool-delete (hlfs rmdir: the
#    HDFS directory is gone), pool-undefine;
#  - a libvirtd without HADOOP_CONF_DIR: the hdfs:/// domain fails to start
#    with the engine's message naming fs.defaultFS and HADOOP_CONF_DIR.
# Root only (libvirtd's system mode); exit 77 otherwise.
E2E_NAME=libvirt_hdfs
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
[ -n "${HLFS_TEST_HDFS:-}" ] || skip "HLFS_TEST_HDFS is not set (hdfs://host:port/dir of a test cluster: bash tests/hdfs/cluster.sh start DIR; see docs/hdfs.md)"
[ "$(id -u)" = 0 ] || skip "libvirtd's system mode needs root"
HDFS=${HLFS_TEST_HDFS%/}
AUTH=${HDFS#hdfs://}
AUTH=${AUTH%%/*}
case $HDFS in
    hdfs://?*/?*) ;;
    *) fail "HLFS_TEST_HDFS must be hdfs://namenode:port/dir, not '$HLFS_TEST_HDFS'" ;;
esac
e2e_init
qemu_init

T=$E2E_WORK
GUEST=$HLFS_ROOT/tests/guest
BOOT_TIMEOUT=${HLFS_BOOT_TIMEOUT:-240}
# shellcheck source=../lib/libvirt-e2e.sh
. "$HLFS_ROOT/tests/lib/libvirt-e2e.sh"

libvirt_prefix
libvirt_guest

# The default filesystem of $HADOOP_CONF_DIR, if it is this cluster: then
# the clone's domain names its disk hdfs:///path.
DEFAULT_FS=""
if [ -n "${HADOOP_CONF_DIR:-}" ] && [ -f "$HADOOP_CONF_DIR/core-site.xml" ]; then
    DEFAULT_FS=$(grep -o '<name>fs.defaultFS</name> *<value>[^<]*' "$HADOOP_CONF_DIR/core-site.xml" |
        sed 's/.*<value>//; s|/*$||' | head -n1)
fi

POOL=hlfs-hdfs-$$
POOLURI=$HDFS/libvirt-$$-$RANDOM
D1=hh1-$(($$ % 10000))
D2=hh2-$(($$ % 10000))
D3=hh3-$(($$ % 10000))
libvirt_check_sock "$D1"
hdfs_cleanup() {
    set +e
    if [ -n "$LIBVIRTD_PID" ]; then
        for d in "$D1" "$D2" "$D3"; do
            V destroy "$d" >/dev/null 2>&1
            V undefine "$d" >/dev/null 2>&1
        done
        V pool-destroy "$POOL-d" >/dev/null 2>&1
        V pool-destroy "$POOL" >/dev/null 2>&1
        V pool-undefine "$POOL" >/dev/null 2>&1
    fi
    # what a failed run leaves on HDFS
    "$HLFS_CLI" delete "$POOLURI/vm1c" >/dev/null 2>&1
    "$HLFS_CLI" delete "$POOLURI/vm1" >/dev/null 2>&1
    "$HLFS_CLI" rmdir "$POOLURI" >/dev/null 2>&1
    e2e_cleanup
}
# libvirtd (so the hlfs CLI it runs, and QEMU) gets this shell's HADOOP_CONF_DIR.
libvirt_start hdfs_cleanup

# --- pool on HDFS ----------------------------------------------------------------
cat >"$T/pool.xml" <<EOF
<pool type='hlfs'>
  <name>$POOL</name>
  <source><name>$POOLURI</name></source>
</pool>
EOF
V pool-define "$T/pool.xml" >/dev/null || vfail "pool-define"
expect_fail "pool-start before pool-build" "does not exist \(run pool-build\)" pool-start "$POOL"
V pool-build "$POOL" >/dev/null || vfail "pool-build"
"$HLFS_CLI" list "$POOLURI" >"$T/list" 2>&1 || fail "pool-build made no directory $POOLURI: $(cat "$T/list")"
V pool-start "$POOL" >/dev/null || vfail "pool-start"
V pool-info "$POOL" | grep -E 'State: *running' >/dev/null || fail "pool $POOL is not running: $(V pool-info "$POOL")"
V pool-dumpxml "$POOL" | grep "<name>$POOLURI</name>" >/dev/null || fail "pool-dumpxml lacks the source name"
ok "pool-build made $POOLURI (hlfs mkdir); pool-start, pool-info: running"

V vol-create-as "$POOL" vm1 "$(stat -c %s "$DISK")" --format raw >/dev/null || vfail "vol-create-as vm1"
V pool-info --bytes "$POOL" >"$T/pool-info" || vfail "pool-info"
avail=$(sed -n 's/^Available: *\([0-9]*\).*/\1/p' "$T/pool-info")
[ "$avail" = 0 ] || fail "pool-info: available is '$avail' after vol-create-as on a pool without a size (expected 0, not a wrapped-around number): $(cat "$T/pool-info")"
V vol-upload --pool "$POOL" vm1 "$DISK" || vfail "vol-upload of the guest disk"
"$HLFS_CLI" export "$POOLURI/vm1" "$T/vm1.raw" >/dev/null || fail "hlfs export $POOLURI/vm1"
cmp "$DISK" "$T/vm1.raw" || fail "the uploaded HDFS volume differs from the guest disk"
rm -f "$T/vm1.raw"
V pool-refresh "$POOL" >/dev/null || vfail "pool-refresh"
V vol-list "$POOL" | grep -E "^ *vm1 +hlfs:$POOLURI/vm1$" >/dev/null || fail "vol-list: $(V vol-list "$POOL")"
V vol-info --pool "$POOL" vm1 >"$T/vol-info" || vfail "vol-info"
grep -Eq 'Type: *network' "$T/vol-info" && grep -Eq 'Capacity: *64.00 MiB' "$T/vol-info" ||
    fail "vol-info: $(cat "$T/vol-info")"
ok "vol-create-as + vol-upload: the guest disk on HDFS, byte-exact; vol-list/vol-info after pool-refresh; pool-info available $avail"

# --- domains --------------------------------------------------------------------------
disk_vol() {
    printf "<disk type='volume' device='disk'><driver name='qemu' type='raw'/><source pool='%s' volume='%s'/><target dev='vda' bus='virtio'/></disk>" "$POOL" "$1"
}
disk_net() {
    printf "<disk type='network' device='disk'><driver name='qemu' type='raw'/><source protocol='hlfs' name='%s'/><target dev='vda' bus='virtio'/></disk>" "$1"
}
# define NAME DISKXML CMD LOG
define() {
    local name=$1 disk=$2 cmd=$3 log=$4 sysinfo=""
    [ -n "$cmd" ] && sysinfo="<sysinfo type='fwcfg'><entry name='opt/hlfs/cmd'>$cmd</entry></sysinfo>"
    cat >"$T/$name.xml" <<EOF
<domain type='$DOMTYPE'>
  <name>$name</name>
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
console() {
    grep -aEq "HLFS-GUEST: $2"$'\r?$' "$1" || fail "no 'HLFS-GUEST: $2' in $1:
$(grep -a 'HLFS-GUEST' "$1")"
}
# marker URI EXPECTED: the guest's marker file in the volume
marker() {
    local got
    rm -f "$T/m.raw"
    "$HLFS_CLI" export "$1" "$T/m.raw" >/dev/null || fail "hlfs export $1"
    got=$("$GUEST/read-marker.sh" "$T/m.raw") || fail "read-marker.sh on $1"
    rm -f "$T/m.raw"
    [ "$got" = "$2" ] || fail "marker in $1 is '$got', expected '$2'"
}
# qemu_log NAME: QEMU's log of NAME's last start (environment + command line)
qemu_log() { cat "$(libvirtd_var_dir)/log/libvirt/qemu/$1.log"; }

define "$D1" "$(disk_vol vm1)" write:first "$T/c1.log"
boot "$D1" "$T/c1.log"
console "$T/c1.log" boot
console "$T/c1.log" 'marker=NONE'
console "$T/c1.log" 'wrote=first'
qemu_log "$D1" | grep -a -- '-blockdev' | grep "\"driver\":\"hlfs\",\"uri\":\"$POOLURI/vm1\"" >/dev/null ||
    fail "no -blockdev driver=hlfs with uri $POOLURI/vm1 in QEMU's command line: $(qemu_log "$D1" | grep -a -- '-blockdev')"
marker "$POOLURI/vm1" first
ok "<disk type='volume'> from the HDFS pool: the guest booted ($DOMTYPE) from $POOLURI/vm1 and wrote 'first'"

V vol-clone --pool "$POOL" vm1 vm1c >/dev/null || vfail "vol-clone"
base=$("$HLFS_CLI" info --output json "$POOLURI/vm1c" | sed -n 's/.*"base": *"\([^"]*\)".*/\1/p')
case $base in
    "$POOLURI/vm1%libvirt-clone-"*) ;;
    *) fail "vol-clone made no HLFS clone of a vm1 snapshot (base '$base')" ;;
esac
V vol-list "$POOL" | grep -E "^ *vm1c +hlfs:$POOLURI/vm1c$" >/dev/null || fail "vol-list lacks vm1c: $(V vol-list "$POOL")"
ok "vol-clone vm1 vm1c: an HLFS clone of $base"

# The clone through a network disk. With HADOOP_CONF_DIR naming this cluster
# its name is hdfs:///path: QEMU resolves it only with the HADOOP_CONF_DIR
# that libvirtd passes on (QEMU's environment is otherwise cleared).
VM1C=$POOLURI/vm1c
DEFAULT_URI=""
if [ -n "$DEFAULT_FS" ] && [ "$DEFAULT_FS" = "hdfs://$AUTH" ]; then
    DEFAULT_URI=hdfs://${POOLURI#hdfs://"$AUTH"}/vm1c
    VM1C=$DEFAULT_URI
else
    log "HADOOP_CONF_DIR's default filesystem is not hdfs://$AUTH ('$DEFAULT_FS'): the clone's domain names $VM1C, the hdfs:/// checks are left out"
fi
if [ -n "$DEFAULT_URI" ]; then
    # the same directory as a pool on hdfs:///: the hlfs CLI that libvirtd
    # runs resolves it with libvirtd's HADOOP_CONF_DIR
    POOL2=$POOL-d
    cat >"$T/pool2.xml" <<EOF
<pool type='hlfs'>
  <name>$POOL2</name>
  <source><name>${DEFAULT_URI%/vm1c}</name></source>
</pool>
EOF
    V pool-create "$T/pool2.xml" >/dev/null || vfail "pool-create of ${DEFAULT_URI%/vm1c}"
    V vol-list "$POOL2" >"$T/vols2" || vfail "vol-list $POOL2"
    grep -E "^ *vm1 +hlfs:${DEFAULT_URI%/vm1c}/vm1$" "$T/vols2" >/dev/null &&
        grep -E "^ *vm1c +hlfs:$DEFAULT_URI$" "$T/vols2" >/dev/null ||
        fail "the hdfs:/// pool does not list vm1 and vm1c: $(cat "$T/vols2")"
    V pool-destroy "$POOL2" >/dev/null || vfail "pool-destroy $POOL2"
    ok "a transient pool on ${DEFAULT_URI%/vm1c} (the default filesystem) lists vm1 and vm1c"
fi
define "$D2" "$(disk_net "$VM1C")" write:clone "$T/c2.log"
boot "$D2" "$T/c2.log"
console "$T/c2.log" 'marker=first'
console "$T/c2.log" 'wrote=clone'
qemu_log "$D2" | grep -a -- '-blockdev' | grep "\"driver\":\"hlfs\",\"uri\":\"$VM1C\"" >/dev/null ||
    fail "no -blockdev driver=hlfs with uri $VM1C: $(qemu_log "$D2" | grep -a -- '-blockdev')"
if [ -n "$DEFAULT_URI" ]; then
    qemu_log "$D2" | grep -a "^HADOOP_CONF_DIR=$HADOOP_CONF_DIR " >/dev/null ||
        fail "QEMU was not given HADOOP_CONF_DIR=$HADOOP_CONF_DIR: $(qemu_log "$D2" | grep -a '^[A-Z_]*=' | tail -n 20)"
fi
marker "$POOLURI/vm1c" clone
marker "$POOLURI/vm1" first
marker "$base" first
ok "network disk $VM1C (the vol-clone): the guest saw 'first', wrote 'clone'; vm1 and $base still hold 'first'"

# --- deletes ------------------------------------------------------------------------------
expect_fail "vol-delete of a volume with a clone" 'clones depend on its snapshots' vol-delete --pool "$POOL" vm1
V pool-destroy "$POOL" >/dev/null || vfail "pool-destroy"
expect_fail "pool-delete of a pool with volumes" 'is not empty' pool-delete "$POOL"
"$HLFS_CLI" info "$POOLURI/vm1" >/dev/null || fail "the refused pool-delete harmed vm1"
V pool-start "$POOL" >/dev/null || vfail "pool-start again"
V undefine "$D2" >/dev/null || vfail "undefine $D2"
V undefine "$D1" >/dev/null || vfail "undefine $D1"
V vol-delete --pool "$POOL" vm1c >/dev/null || vfail "vol-delete vm1c"
V vol-delete --pool "$POOL" vm1 >/dev/null || vfail "vol-delete vm1"
[ -z "$(V vol-list "$POOL")" ] || fail "vol-list not empty after the deletes: $(V vol-list "$POOL")"
V pool-destroy "$POOL" >/dev/null || vfail "pool-destroy"
V pool-delete "$POOL" >/dev/null || vfail "pool-delete"
rc=0
"$HLFS_CLI" list "$POOLURI" >"$T/list" 2>&1 || rc=$?
[ $rc = 3 ] || fail "after pool-delete 'hlfs list $POOLURI' exited $rc, expected 3 (no such directory): $(cat "$T/list")"
V pool-undefine "$POOL" >/dev/null || vfail "pool-undefine"
ok "vol-delete vm1c + vm1, pool-destroy, pool-delete (the HDFS directory is gone), pool-undefine"

# --- without HADOOP_CONF_DIR, hdfs:/// cannot resolve in QEMU -----------------------------
if [ -n "$DEFAULT_URI" ]; then
    libvirtd_stop
    saved_conf=$HADOOP_CONF_DIR
    unset HADOOP_CONF_DIR
    libvirtd_start "$PREFIX" "$HLFS_CLI" || fail "libvirtd (without HADOOP_CONF_DIR) did not start"
    export HADOOP_CONF_DIR=$saved_conf
    define "$D3" "$(disk_net "$DEFAULT_URI")" "" "$T/c3.log"
    expect_fail "hdfs:/// when libvirtd has no HADOOP_CONF_DIR" 'fs.defaultFS.*HADOOP_CONF_DIR' start "$D3"
    V undefine "$D3" >/dev/null || vfail "undefine $D3"
fi
log "passed"
