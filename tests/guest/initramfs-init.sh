#!/bin/sh
# /init of the HLFS test guest's initramfs (busybox sh).
# Debian kernels build virtio, ext4 and qemu_fw_cfg as modules, so this loads
# them (list made by build-guest.sh with modprobe --show-depends, deps first),
# mounts the root filesystem read-write and hands over to its /sbin/init.
# Every failure ends in a power-off so a test harness never waits for a hang.

export PATH=/bin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys

fail() {
    echo "HLFS-GUEST: error=$1"
    echo "HLFS-GUEST: poweroff"
    poweroff -f
    reboot -f # with -no-reboot QEMU exits on reboot too
    sleep 5
}

# A module that does not apply to this CPU (crc32c-intel without SSE4.2
# under plain TCG) fails to load; the generic fallback follows in the list.
while read -r mod; do
    insmod "/lib/modules/$mod" 2>/dev/null
done </etc/modules.order

root=/dev/vda2
rootfstype=ext4
# shellcheck disable=SC2013 # the command line is words, not lines
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) root="${arg#root=}" ;;
        rootfstype=*) rootfstype="${arg#rootfstype=}" ;;
    esac
done

# virtio_blk probes asynchronously: wait for the device (up to ~10 s).
dev=""
i=0
while [ $i -lt 100 ]; do
    case "$root" in
        LABEL=* | UUID=*) dev=$(findfs "$root" 2>/dev/null) ;;
        *) [ -b "$root" ] && dev="$root" ;;
    esac
    [ -n "$dev" ] && break
    sleep 0.1
    i=$((i + 1))
done
[ -n "$dev" ] || fail "no-root-device:$root"

mkdir -p /newroot
# A read-only disk (e.g. a snapshot opened read-only) still boots and
# reports (busybox mount falls back to ro); writes then fail visibly.
mount -t "$rootfstype" -o rw "$dev" /newroot 2>/dev/null ||
    mount -t "$rootfstype" -o ro "$dev" /newroot || fail "mount-root:$dev"
grep -q ' /newroot [^ ]* ro[, ]' /proc/mounts && echo "HLFS-GUEST: root-readonly"
[ -x /newroot/sbin/init ] || fail "no-init-on-root"

mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
# shellcheck disable=SC2093 # reached only if exec itself fails
exec switch_root /newroot /sbin/init
fail "switch_root"
