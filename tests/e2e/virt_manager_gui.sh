#!/usr/bin/env bash
# virt-manager with the HLFS patches (virt-manager-patch/), used as a person
# would: its real window under Xvfb, driven through the accessibility tree
# by dogtail (tests/e2e/virt_manager_gui.py), against our private libvirtd
# (patched libvirt 11.3.0, tests/lib/libvirtd.sh) and the patched QEMU.
# Every step is checked through virsh and the hlfs CLI:
#   1. Add Storage Pool: type hlfs, a local directory given as a plain path
#      (becomes local:///dir); with HLFS_TEST_HDFS also an HDFS URI pool and
#      a volume in it;
#   2. volumes: create (1 GiB), clone (the new button: an HLFS clone of a
#      snapshot), delete;
#   3. New VM: "Import existing disk image" with the hlfs volume 'guest' (the
#      test guest, its boot line set to count in memory on ttyS0) picked in
#      the storage browser; the VM boots from it under TCG (or KVM);
#   4. snapshots of the running VM: create (internal, with memory), run
#      (revert: the in-memory counter goes back to the saved value, no new
#      boot), delete.
# HLFS_SCREENSHOT_DIR=DIR saves the pool dialog, the volume list and the
# snapshot view there as PNG (docs/images has the committed ones).
# Root only (libvirtd's system mode); exit 77 otherwise. About 95 s warm
# on this machine with the HDFS step (one guest boot under TCG, ~30 s).
# Where /dev/kvm cannot run the guest (guest_accel in tests/lib/qemu.sh) the
# driver sets <domain type='qemu'> in the customize step's XML tab.
E2E_NAME=virt_manager_gui
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
[ "$(id -u)" = 0 ] || skip "libvirtd's system mode needs root"
# shellcheck source=../../scripts/common.sh
. "$HLFS_ROOT/scripts/common.sh"
# The GUI stack (scripts/test.sh installs the same list up front).
need_apt xvfb xauth dbus at-spi2-core python3-dogtail imagemagick mtools
e2e_init
qemu_init

T=$E2E_WORK
GUEST=$HLFS_ROOT/tests/guest
t0=$(date +%s)

PREFIX=$("$HLFS_ROOT/libvirt-pool/build.sh" 2>"$T/libvirt-build.err" | tail -n1) || {
    tail -n 30 "$T/libvirt-build.err" >&2
    fail "libvirt-pool/build.sh failed"
}
[ -x "$PREFIX/sbin/libvirtd" ] || fail "no libvirtd in '$PREFIX'"
VMP=$("$HLFS_ROOT/virt-manager-patch/build.sh" 2>"$T/vmm-build.err" | tail -n1) || {
    tail -n 30 "$T/vmm-build.err" >&2
    fail "virt-manager-patch/build.sh failed"
}
[ -x "$VMP/bin/virt-manager" ] || fail "no bin/virt-manager in '$VMP'"
"$GUEST/build-guest.sh" >"$T/guest.env" 2>"$T/build-guest.err" || {
    cat "$T/build-guest.err" >&2
    fail "tests/guest/build-guest.sh failed"
}
DISK=$(sed -n 's/^DISK=//p' "$T/guest.env" | head -n1)
[ -f "$DISK" ] || fail "build-guest.sh printed no DISK: $(cat "$T/guest.env")"
case "$(guest_accel)" in kvm) VIRT_TYPE=kvm ;; *) VIRT_TYPE=qemu ;; esac

# The test guest boots by itself (SeaBIOS, SYSLINUX); its boot line gets
# hlfs.cmd=count:200 so it keeps running and counts in memory on ttyS0
# (guest-init.sh), as a VM a person created would have no fw_cfg entry.
cp --sparse=always "$DISK" "$T/guest.raw"
mcopy -n -i "$T/guest.raw@@1M" ::/syslinux.cfg "$T/syslinux.cfg" ||
    fail "cannot read syslinux.cfg from the guest disk's boot partition"
sed -i 's/^\( *APPEND .*\)$/\1 hlfs.cmd=count:200/' "$T/syslinux.cfg"
grep -q 'APPEND .*hlfs.cmd=count:200' "$T/syslinux.cfg" || fail "no APPEND line in syslinux.cfg"
mcopy -o -i "$T/guest.raw@@1M" "$T/syslinux.cfg" ::/syslinux.cfg || fail "cannot write syslinux.cfg"
POOL_DIR=$T/pool
mkdir -p "$POOL_DIR"
"$HLFS_CLI" import "$T/guest.raw" "local://$POOL_DIR/guest" >/dev/null || fail "hlfs import of the guest"
rm -f "$T/guest.raw"

# --- private libvirtd (QEMU found through PATH: the patched build first) -----
DOM=vmg-$(($$ % 10000))
sock="$PREFIX/var/lib/libvirt/qemu/domain-999-$DOM/monitor.sock"
[ ${#sock} -le 107 ] || fail "the build prefix $PREFIX is too long for QEMU's monitor socket ($sock); use a shorter HLFS_CACHE"
# shellcheck source=../lib/libvirtd.sh
. "$HLFS_ROOT/tests/lib/libvirtd.sh"
V() { "$PREFIX/bin/virsh" -q -c "$HLFS_LIBVIRT_URI" "$@"; }
XVFB_PID=""
HDFS_DIR=""
if [ -n "${HLFS_TEST_HDFS:-}" ]; then
    HDFS_DIR=$HLFS_TEST_HDFS/vmgui-$$-$(date +%s)
fi
gui_cleanup() {
    set +e
    if [ -n "$LIBVIRTD_PID" ]; then
        V destroy "$DOM" >/dev/null 2>&1
        V undefine "$DOM" --snapshots-metadata >/dev/null 2>&1
        for p in hp1 hh1; do
            for v in $(V vol-list "$p" --name 2>/dev/null); do V vol-delete --pool "$p" "$v" >/dev/null 2>&1; done
            V pool-destroy "$p" >/dev/null 2>&1
            [ "$p" = hh1 ] && V pool-delete "$p" >/dev/null 2>&1
            V pool-undefine "$p" >/dev/null 2>&1
        done
    fi
    [ -n "$XVFB_PID" ] && kill "$XVFB_PID" 2>/dev/null && wait "$XVFB_PID" 2>/dev/null
    e2e_cleanup
}
trap gui_cleanup EXIT
libvirtd_start "$PREFIX" "$HLFS_CLI" || fail "libvirtd did not start"
caps=$(V capabilities) || fail "virsh capabilities"
grep -q "<emulator>$QEMU_BIN/qemu-system-x86_64</emulator>" <<<"$caps" ||
    fail "libvirtd does not offer the patched QEMU ($QEMU_BIN) as the emulator"
# virt-manager talks to libvirtd through Debian's python3-libvirt (9.0.0,
# with Debian's libvirt0): the RPC protocol is the same.
/usr/bin/python3 -c '
import libvirt, sys
c = libvirt.open(sys.argv[1])
c.listAllStoragePools()
print("python3-libvirt %d talks to libvirtd %d" % (libvirt.getVersion(), c.getLibVersion()))
' "$HLFS_LIBVIRT_URI" >&2 || fail "Debian's python3-libvirt cannot talk to the private libvirtd"

# --- Xvfb + a D-Bus session (AT-SPI bus) + the driver ------------------------------
exec 5>"$T/display"
Xvfb -displayfd 5 -screen 0 1280x800x24 -nolisten tcp >"$T/xvfb.log" 2>&1 &
XVFB_PID=$!
exec 5>&-
for _ in $(seq 100); do [ -s "$T/display" ] && break; sleep 0.1; done
[ -s "$T/display" ] || fail "Xvfb did not start: $(cat "$T/xvfb.log")"
export DISPLAY=:$(head -n1 "$T/display")
log "Xvfb on $DISPLAY"

mkdir -p "$T/xdg" "$T/home"
chmod 700 "$T/xdg"
rc=0
# GSETTINGS_BACKEND=memory: virt-manager's settings live and die with it.
# GTK_MODULES: GTK's accessibility bridge (dogtail reads the window through it).
env HOME="$T/home" XDG_RUNTIME_DIR="$T/xdg" XDG_CONFIG_HOME="$T/home/.config" \
    GSETTINGS_BACKEND=memory GTK_MODULES=gail:atk-bridge NO_AT_BRIDGE=0 \
    VMM_BIN="$VMP/bin/virt-manager" VIRSH="$PREFIX/bin/virsh" LV_URI="$HLFS_LIBVIRT_URI" \
    HLFS_CLI="$HLFS_CLI" POOL_DIR="$POOL_DIR" DOM="$DOM" VIRT_TYPE="$VIRT_TYPE" WORK="$T" \
    SHOTS="${HLFS_SCREENSHOT_DIR:-}" HDFS_DIR="$HDFS_DIR" \
    timeout 600 dbus-run-session -- /usr/bin/python3 "$HLFS_ROOT/tests/e2e/virt_manager_gui.py" \
    2> >(grep -v -e 'Failed to set fd limit' -e 'Activating service' -e 'Successfully activated' \
        -e 'SpiRegistry daemon' >&2) || rc=$?
if [ "$rc" != 0 ]; then
    tail -n 30 "$T/virt-manager.log" >&2
    HLFS_KEEP_WORK=1
    fail "the GUI driver failed (exit $rc); virt-manager's log, fail.png: $T"
fi
log "passed in $(( $(date +%s) - t0 )) s"
