#!/usr/bin/env bash
# virsh migrate of a domain whose disk is an HLFS volume on local:// in a
# directory that is not on a shared filesystem (patched libvirt 11.3.0,
# libvirt-pool/ patch 0008): libvirt counts network disks as shared storage,
# but a local:// volume is a directory of this host.
#  - without --unsafe the migration is refused before anything starts, with
#    an error naming the disk, the volume and the fixes;
#  - with --unsafe the check is skipped: the migration goes on to the next
#    step, which fails here only because the destination is this same daemon
#    ("Attempt to migrate guest to the same host").
# (A real migration between two hosts is not tested here.)
# Root only (libvirtd's system mode); exit 77 otherwise.
E2E_NAME=libvirt_migrate_unsafe
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
[ "$(id -u)" = 0 ] || skip "libvirtd's system mode needs root"
e2e_init
qemu_init

T=$E2E_WORK
ok() { printf 'ok   %s\n' "$*"; }
t0=$(date +%s)

if [ -n "${HLFS_LIBVIRT_PREFIX:-}" ]; then
    PREFIX=$HLFS_LIBVIRT_PREFIX
else
    PREFIX=$("$HLFS_ROOT/libvirt-pool/build.sh" 2>"$T/libvirt-build.err" | tail -n1) || {
        tail -n 30 "$T/libvirt-build.err" >&2
        fail "libvirt-pool/build.sh failed"
    }
fi
[ -x "$PREFIX/sbin/libvirtd" ] || fail "no libvirtd in '$PREFIX'"
case "$(guest_accel)" in kvm) DOMTYPE=kvm ;; *) DOMTYPE=qemu ;; esac

# The volume's directory must not be on a shared filesystem for this test.
fstype=$(stat -f -c %T "$T")
case "$fstype" in
    nfs*|cifs|smb*|ceph|gfs*|ocfs*|lustre|gpfs|afs|fuse*) skip "$T is on $fstype, which may count as shared" ;;
esac

D=hmu-$(($$ % 10000))
sock="$PREFIX/var/lib/libvirt/qemu/domain-999-$D/monitor.sock"
[ ${#sock} -le 107 ] || fail "the build prefix $PREFIX is too long for QEMU's monitor socket ($sock); use a shorter HLFS_CACHE"
# shellcheck source=../lib/libvirtd.sh
. "$HLFS_ROOT/tests/lib/libvirtd.sh"
V() { "$PREFIX/bin/virsh" -q -c "$HLFS_LIBVIRT_URI" "$@"; }
dom_cleanup() {
    set +e
    if [ -n "$LIBVIRTD_PID" ]; then
        V destroy "$D" >/dev/null 2>&1
        V undefine "$D" >/dev/null 2>&1
    fi
    e2e_cleanup
}
trap dom_cleanup EXIT
libvirtd_start "$PREFIX" "$HLFS_CLI" || fail "libvirtd did not start"
vfail() { fail "$* (libvirtd log: $(tail -n 5 "$LIBVIRTD_LOG" 2>/dev/null))"; }
expect_fail() {
    local d=$1 re=$2 out
    shift 2
    if out=$(V "$@" 2>&1); then fail "$d: 'virsh $*' succeeded:
$out"; fi
    grep -Eq -- "$re" <<<"$out" || fail "$d: 'virsh $*' failed without /$re/:
$out"
    ok "$d: $(grep -o 'error: .*' <<<"$out" | tail -n1 | cut -c1-300)"
}

VOL=local://$T/pool/vm1
mkdir -p "$T/pool"
"$HLFS_CLI" create "$VOL" 16M >/dev/null || fail "hlfs create $VOL"
cat >"$T/dom.xml" <<EOF
<domain type='$DOMTYPE'>
  <name>$D</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>$QEMU_BIN/qemu-system-x86_64</emulator>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='hlfs' name='$VOL'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
V define "$T/dom.xml" >/dev/null || vfail "define $D"
V start "$D" --paused >/dev/null || vfail "start $D --paused"

expect_fail "migrating a local:// HLFS volume on a non-shared filesystem is refused" \
    "disk 'vda' is the HLFS volume '$VOL' in a directory that is not on a shared filesystem.*or migrate with --unsafe" \
    migrate --live "$D" "$HLFS_LIBVIRT_URI"
expect_fail "with --unsafe the check is skipped (and the same-host check stops it)" \
    'Attempt to migrate guest to the same host' \
    migrate --live --unsafe "$D" "$HLFS_LIBVIRT_URI"
[ "$(V domstate "$D")" = paused ] || fail "$D is '$(V domstate "$D")' after the refused migrations"
V destroy "$D" >/dev/null || vfail "destroy"
V undefine "$D" >/dev/null || vfail "undefine"
log "passed in $(( $(date +%s) - t0 )) s"
