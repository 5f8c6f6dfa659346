#!/usr/bin/env bash
# Builds the tiny bootable Linux guest used by the HLFS end-to-end tests.
#
# Output: a raw, MBR-partitioned disk image that boots by itself through
# SeaBIOS (QEMU's default BIOS): partition 1 is FAT16 with SYSLINUX, the
# Debian kernel and a busybox initramfs; partition 2 is the ext4 root
# filesystem (busybox-static + guest-init.sh as /sbin/init). The kernel and
# initrd are also left beside the disk for `-kernel` boots, with the
# uncompressed ELF vmlinux for fast `-kernel` boots under TCG (PVH entry).
#
# Everything comes from Debian packages fetched with apt-get (the kernel and
# busybox are downloaded and unpacked, never installed on the host); no loop
# devices or mounts are needed, so this works in containers too.
#
# Usage: build-guest.sh            (as root; apt-get installs missing tools)
# fio (for bench/report.sh; guest command fio:SPEC) is built from Debian's
# source tarball as a static binary (Debian's own fio links librados,
# librbd, libgfapi, ... which would not fit the root fs), cached in
# $HLFS_CACHE/fio-<version>-<hash>/fio and copied to /usr/bin/fio.
#
# Env:   HLFS_CACHE       cache root (default /var/cache/hlfs-build)
#        HLFS_GUEST_DISK_MIB   disk size in MiB (default 64)
# Prints KERNEL=, VMLINUX=, INITRD=, CMDLINE=, DISK= lines, and the disk path last.
# The output dir is keyed by a hash of this script, its input files and
# settings, so a second run only prints the paths.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${HLFS_CACHE:-/var/cache/hlfs-build}
# shellcheck disable=SC2034 # read by build-lib.sh
BUILD_TAG=build-guest
# shellcheck source=SCRIPTDIR/../../scripts/build-lib.sh
. "$HERE/../../scripts/build-lib.sh"   # debian_mirror
DISK_MIB=${HLFS_GUEST_DISK_MIB:-64}
KERNEL_PKG=linux-image-amd64
BUSYBOX_PKG=busybox-static
BOOT_MIB=16            # FAT partition: kernel (~8 MiB) + initrd (~3 MiB)
PART1_START=2048       # sectors; 1 MiB alignment as fdisk would do
# By label, so the same disk boots as virtio (vda2) or IDE (-hda: sda2).
ROOT_DEV=LABEL=hlfs-root
CMDLINE="root=$ROOT_DEV rootfstype=ext4 rw console=ttyS0 quiet panic=-1"
# Modules the initramfs loads; modprobe --show-depends adds their deps and
# softdeps (ext4 wants crc32c) in load order.
MODULES="virtio_pci virtio_blk ata_piix sd_mod ext4 qemu_fw_cfg"
# fio: the orig tarball of Debian bookworm's fio, pinned by its sha256 (as
# in fio_3.33-3.dsc); built with only what a guest benchmark needs (libaio).
FIO_VER=3.33
FIO_ORIG=fio_$FIO_VER.orig.tar.gz
FIO_SHA256=d2410e13e0f379d061d077cc5ae325835bb7c6186aa7bafc1df954cbc9b014fc
# Fetched from the Debian archive this machine's apt uses (debian_mirror).
FIO_POOL_PATH=pool/main/f/fio/$FIO_ORIG
FIO_CONFIGURE="--build-static --disable-native"

key=$(cat "$HERE/build-guest.sh" "$HERE/initramfs-init.sh" "$HERE/guest-init.sh" \
    <(echo "$DISK_MIB $KERNEL_PKG $BUSYBOX_PKG $CMDLINE $MODULES $FIO_SHA256 $FIO_CONFIGURE") |
    sha256sum | cut -c1-16)
OUT="$CACHE/guest-$key"

report() {
    echo "KERNEL=$OUT/vmlinuz"
    [ -f "$OUT/vmlinux" ] && echo "VMLINUX=$OUT/vmlinux"
    echo "INITRD=$OUT/initrd"
    echo "CMDLINE=$(cat "$OUT/cmdline")"
    echo "DISK=$OUT/disk.raw"
    echo "$OUT/disk.raw"
}

if [ -f "$OUT/disk.raw" ]; then
    report
    exit 0
fi

# From here on stdout belongs to the report only: tools' chatter goes to stderr.
exec 3>&1 1>&2
log() { echo "build-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (needs apt-get and mknod)"
[ "$DISK_MIB" -ge $((BOOT_MIB + 24)) ] || die "HLFS_GUEST_DISK_MIB too small"

export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_update_once() {
    [ $apt_updated = 1 ] && return 0
    apt_updated=1
    log "apt-get update"
    apt-get update -qq >&2
}

# Host tools, installed only when missing (dpkg-query is fast; apt-get isn't).
need_pkgs=()
for pkg in dosfstools mtools syslinux syslinux-common fdisk e2fsprogs cpio kmod gzip xz-utils \
    curl ca-certificates gcc make libc6-dev libaio-dev zlib1g-dev; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" = installed ] ||
        need_pkgs+=("$pkg")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    apt_install() { apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2; }
    apt_install || { apt_update_once && apt_install; } || die "apt-get install failed"
fi
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$MBR_BIN" ] || die "$MBR_BIN missing (syslinux-common)"

mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/.build-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK"

# --- fetch and unpack the Debian packages -----------------------------------
mkdir -p "$WORK/debs"
resolve_kernel() {
    # linux-image-amd64 is a metapackage; its dependency is the real image.
    apt-cache depends "$KERNEL_PKG" 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
kpkg=$(resolve_kernel)
if [ -z "$kpkg" ]; then
    apt_update_once
    kpkg=$(resolve_kernel)
fi
[ -n "$kpkg" ] || die "cannot resolve $KERNEL_PKG to a kernel image package"
download() {
    (cd "$WORK/debs" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg" "$BUSYBOX_PKG" >&2)
}
log "downloading $kpkg $BUSYBOX_PKG"
download || { apt_update_once && download; } || die "apt-get download failed"
dpkg-deb -x "$WORK"/debs/linux-image-*.deb "$WORK/kernel"
dpkg-deb -x "$WORK"/debs/busybox-static_*.deb "$WORK/busybox"
KVER=$(ls "$WORK/kernel/lib/modules")
[ "$(echo "$KVER" | wc -l)" = 1 ] || die "expected one kernel version, got: $KVER"
BUSYBOX="$WORK/busybox/bin/busybox"
[ -x "$BUSYBOX" ] || die "busybox binary not found in $BUSYBOX_PKG"

# --- fio (static) ------------------------------------------------------------
FIO_DIR="$CACHE/fio-$FIO_VER-$(echo "$FIO_SHA256 $FIO_CONFIGURE" | sha256sum | cut -c1-12)"
build_fio() {
    [ -x "$FIO_DIR/fio" ] && return 0
    local src="$WORK/fio-src" tarball="$CACHE/dist/$FIO_ORIG"
    mkdir -p "$CACHE/dist"
    if [ ! -f "$tarball" ] || [ "$(sha256sum <"$tarball" | cut -d' ' -f1)" != "$FIO_SHA256" ]; then
        local mirror
        mirror=$(debian_mirror) ||
            die "no Debian bookworm archive in /etc/apt/sources.list{,.d} to fetch $FIO_ORIG from: add one"
        local FIO_URL=$mirror/$FIO_POOL_PATH
        log "downloading $FIO_URL"
        curl -fsSL -o "$tarball.tmp" "$FIO_URL" || die "cannot download $FIO_URL"
        [ "$(sha256sum <"$tarball.tmp" | cut -d' ' -f1)" = "$FIO_SHA256" ] ||
            die "$FIO_ORIG: sha256 mismatch (expected $FIO_SHA256)"
        mv "$tarball.tmp" "$tarball"
    fi
    log "building fio $FIO_VER (static, ~30 s)"
    mkdir -p "$src"
    tar -xzf "$tarball" -C "$src" --strip-components=1 --no-same-owner
    # shellcheck disable=SC2086
    (cd "$src" && ./configure $FIO_CONFIGURE && make -j"$(nproc)") >"$WORK/fio-build.log" 2>&1 ||
        { tail -n 30 "$WORK/fio-build.log" >&2; die "fio build failed"; }
    grep -q '^Linux AIO support *yes' "$WORK/fio-build.log" || die "fio was built without libaio"
    mkdir -p "$WORK/fio-out"
    strip -o "$WORK/fio-out/fio" "$src/fio"
    mv -T "$WORK/fio-out" "$FIO_DIR" 2>/dev/null || [ -x "$FIO_DIR/fio" ] || die "cannot create $FIO_DIR"
}
build_fio

# --- initramfs -----------------------------------------------------------------
# The .deb ships no modules.dep (depmod runs at install time): make one.
depmod -b "$WORK/kernel" "$KVER"
MODDIR="$WORK/kernel/lib/modules/$KVER"
IRD="$WORK/initramfs"
mkdir -p "$IRD"/{bin,dev,proc,sys,newroot,etc,lib/modules}
: >"$IRD/etc/modules.order"
# shellcheck disable=SC2086
for ko in $(modprobe -d "$WORK/kernel" -S "$KVER" --show-depends -a $MODULES |
    awk '$1 == "insmod" { print $2 }' | awk '!seen[$0]++'); do
    rel=${ko#"$MODDIR"/}
    mkdir -p "$IRD/lib/modules/$(dirname "$rel")"
    cp "$ko" "$IRD/lib/modules/$rel"
    echo "$rel" >>"$IRD/etc/modules.order"
done
for m in $MODULES; do
    grep -q "/$m.ko\$" "$IRD/etc/modules.order" || die "module $m missing from the initramfs"
done

install_busybox() { # dir
    cp "$BUSYBOX" "$1/bin/busybox"
    local applet
    for applet in $("$BUSYBOX" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$1/bin/$applet"
    done
}
install_busybox "$IRD"
install -m 755 "$HERE/initramfs-init.sh" "$IRD/init"
mknod -m 600 "$IRD/dev/console" c 5 1
(cd "$IRD" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) |
    gzip -9 -n >"$WORK/initrd"

# --- root filesystem -------------------------------------------------------------
ROOT="$WORK/rootfs"
mkdir -p "$ROOT"/{bin,sbin,dev,proc,sys,tmp,var,etc,root,usr/bin}
install_busybox "$ROOT"
install -m 755 "$FIO_DIR/fio" "$ROOT/usr/bin/fio"
install -m 755 "$HERE/guest-init.sh" "$ROOT/sbin/init"
echo "hlfs-guest" >"$ROOT/etc/hostname"
echo "kernel=$kpkg ($KVER) busybox=$("$BUSYBOX" | head -1) $("$FIO_DIR/fio" --version)" >"$ROOT/etc/hlfs-guest-release"

ROOT_MIB=$((DISK_MIB - BOOT_MIB - PART1_START / 2048))
mke2fs -q -F -t ext4 -L hlfs-root -E root_owner=0:0 -d "$ROOT" "$WORK/root.img" "${ROOT_MIB}M"

# --- boot partition: FAT16 + SYSLINUX ------------------------------------------------
cat >"$WORK/syslinux.cfg" <<EOF
SERIAL 0 115200
PROMPT 0
TIMEOUT 0
DEFAULT hlfs
LABEL hlfs
  KERNEL /vmlinuz
  INITRD /initrd
  APPEND $CMDLINE
EOF
cp "$WORK/kernel/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
# -h: hidden sectors = partition start, which the SYSLINUX boot sector adds
# to find ldlinux.sys on the whole disk.
mkfs.fat -C -F 16 -n HLFSBOOT -h "$PART1_START" "$WORK/boot.img" $((BOOT_MIB * 1024)) >/dev/null
mcopy -i "$WORK/boot.img" "$WORK/vmlinuz" "$WORK/initrd" "$WORK/syslinux.cfg" ::/
syslinux --install "$WORK/boot.img"

# --- assemble the disk ---------------------------------------------------------------
mkdir -p "$WORK/out"
DISK="$WORK/out/disk.raw"
truncate -s "${DISK_MIB}M" "$DISK"
boot_sectors=$((BOOT_MIB * 2048))
root_start=$((PART1_START + boot_sectors))
sfdisk -q "$DISK" >/dev/null <<EOF
label: dos
label-id: 0x484c4653
start=$PART1_START, size=$boot_sectors, type=e, bootable
start=$root_start, type=83
EOF
# mbr.bin boots the active partition; 440 bytes keeps the partition table.
dd if="$MBR_BIN" of="$DISK" bs=440 count=1 conv=notrunc status=none
dd if="$WORK/boot.img" of="$DISK" bs=512 seek="$PART1_START" conv=notrunc,sparse status=none
dd if="$WORK/root.img" of="$DISK" bs=512 seek="$root_start" conv=notrunc,sparse status=none

cp "$WORK/vmlinuz" "$WORK/initrd" "$WORK/out/"
# The uncompressed ELF kernel boots directly with `-kernel vmlinux` (PVH
# entry, Debian has CONFIG_PVH=y). Under TCG that skips ~5-8 s of xz
# decompression of the bzImage. Found by its compression magic, as the
# kernel's scripts/extract-vmlinux does.
extract_vmlinux() {
    local magic off
    for magic in '\xfd7zXZ:xz -dc' '\x28\xb5\x2f\xfd:zstd -dcq' '\x1f\x8b\x08:gzip -dc'; do
        for off in $(LC_ALL=C grep -obUaP "${magic%%:*}" "$WORK/vmlinuz" | cut -d: -f1 | head -5); do
            tail -c +$((off + 1)) "$WORK/vmlinuz" | ${magic#*:} >"$WORK/out/vmlinux" 2>/dev/null || true
            if [ "$(head -c 4 "$WORK/out/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
                return 0
            fi
        done
    done
    rm -f "$WORK/out/vmlinux"
    return 1
}
extract_vmlinux || log "warning: no uncompressed vmlinux found in the bzImage (PVH boot unavailable)"
echo "$CMDLINE" >"$WORK/out/cmdline"
cp "$ROOT/etc/hlfs-guest-release" "$WORK/out/release"
echo "$root_start" >"$WORK/out/root-start-sector"

# Publish atomically; a concurrent build that won the race is just as good.
mv -T "$WORK/out" "$OUT" 2>/dev/null || [ -f "$OUT/disk.raw" ] || die "cannot create $OUT"
log "built $OUT ($(cat "$OUT/release"))"
report >&3
