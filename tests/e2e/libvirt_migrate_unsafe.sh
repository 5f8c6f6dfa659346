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
# shellcheck source=../lib/libvirt-e2e.sh
. "$HLFS_ROOT/tests/lib/libvirt-e2e.sh"
t0=$(date +%s)

libvirt_prefix
case "$(guest_accel)" in kvm) DOMTYPE=kvm ;; *) DOMTYPE=qemu ;; esac

# The volume's directory must not be on a shared filesystem for this test.
fstype=$(stat -f -c %T "$T")
case "$fstype" in
    nfs*|cifs|smb*|ceph|gfs*|ocfs*|lustre|gpfs|afs|fuse*) skip "$T is on $fstype, which may count as shared" ;;
esac

D=hmu-$(($$ % 10000))
libvirt_check_sock "$D"
dom_cleanup() {
    set +e
    libvirt_drop "$D"
    e2e_cleanup
}
libvirt_start dom_cleanup

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
