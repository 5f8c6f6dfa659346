#!/usr/bin/env bash
# Debian's virt-manager 4.1.0 (bookworm, 1:4.1.0-2) with the HLFS patches
# (virt-manager-patch/patches/*.patch): hlfs pools in "Add storage pool",
# volume create/delete/clone in hlfs pools, snapshots of VMs on HLFS volumes.
#
#   virt-manager-patch/build.sh          # build (or reuse); last line: the install prefix
#   P=$(virt-manager-patch/build.sh | tail -n1)
#   "$P/bin/virt-manager" --connect qemu:///system
#
# Environment:
#   HLFS_CACHE          cache root                               [/var/cache/hlfs-build]
#   HLFS_SKIP_DEPS=1    do not touch apt (everything already installed)
#
# virt-manager is pure Python. Its source package's orig tarball cannot be
# fetched from every mirror (this machine's answers 404 for it), its binary
# packages can: they hold the same tree (virtManager/, virtinst/, ui/, icons)
# with Debian's patches applied, so the series is made against that tree,
# -p1 paths as in the source package. The .debs are fetched with
# `apt-get download` and sha256-checked.
#
# Layout (everything outside the checkout):
#   $HLFS_CACHE/dist/{virt-manager,virtinst}_1%3a4.1.0-2_all.deb
#   $HLFS_CACHE/virt-manager-<key>/src/      the Debian tree + the patch series
#   $HLFS_CACHE/virt-manager-<key>/prefix/   bin/virt-manager, share/virt-manager/
#                                            (src + virtinst/build.cfg naming the
#                                            prefix), share/glib-2.0/schemas/ (compiled)
#   $HLFS_CACHE/virt-manager-<key>/stamp     inputs of the last good build
# <key> hashes the version, the .debs and the patches; the stamp adds this
# script's hash. With unchanged inputs a run takes a moment.
#
# The last line printed on stdout is the install prefix; progress goes to stderr.
set -euo pipefail

VM_VERSION=1:4.1.0-2
DEBS=("virt-manager_1%3a4.1.0-2_all.deb 3896e848f3426d7a480fc49a8d91d617d9839eae8e754fb6928ce6a77f8f4158"
      "virtinst_1%3a4.1.0-2_all.deb c1b50c563f789094a5d65633a2c147c2a7db9f09bc00efc0b12a57dbba9a0223")
# What the patched virt-manager needs at run time (the Depends of the two
# packages, without the packages themselves: /usr/bin/virt-manager stays
# Debian's or absent), plus glib-compile-schemas for the settings schema.
RUNTIME_PKGS=(python3 python3-gi python3-gi-cairo python3-libvirt python3-libxml2
              python3-requests gir1.2-gtk-3.0 gir1.2-gtk-vnc-2.0 gir1.2-gtksource-4
              gir1.2-libosinfo-1.0 gir1.2-libvirt-glib-1.0 gir1.2-vte-2.91
              librsvg2-common dconf-gsettings-backend libglib2.0-bin patch)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${HLFS_CACHE:-/var/cache/hlfs-build}

for a in "$@"; do
    case $a in
        -h|--help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "virt-manager-patch/build.sh: unknown argument '$a' (it takes none; see --help)" >&2; exit 2 ;;
    esac
done

# shellcheck disable=SC2034 # read by build-lib.sh
BUILD_TAG=virt-manager-hlfs
# shellcheck source=SCRIPTDIR/../scripts/build-lib.sh
. "$(dirname "$HERE")/scripts/build-lib.sh"

find_patches "$HERE/patches"
# Its own lock, not lock_cache's: nothing here waits for a QEMU or libvirt build.
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-virt-manager"
flock 9

SRC_KEY=$( { echo "virt-manager $VM_VERSION"; printf '%s\n' "${DEBS[@]}"; sha "${PATCHES[@]}"; } |
    sha256sum | cut -c1-16)
SCRIPT_SHA=$(sha "$HERE/build.sh" | cut -c1-16)
WORK=$CACHE/virt-manager-$SRC_KEY
PREFIX=$WORK/prefix
STAMP_WANT="src=$SRC_KEY script=$SCRIPT_SHA"

if [ -f "$WORK/stamp" ] && [ "$(cat "$WORK/stamp")" = "$STAMP_WANT" ] &&
   [ -x "$PREFIX/bin/virt-manager" ]; then
    touch "$WORK"
    log "up to date: $WORK"
    echo "$PREFIX"
    exit 0
fi

[ "${HLFS_SKIP_DEPS:-0}" = 1 ] || install_apt "${RUNTIME_PKGS[@]}"

# ---- the two .debs, checked -------------------------------------------------
dist=$CACHE/dist
mkdir -p "$dist"
for d in "${DEBS[@]}"; do
    read -r file want <<<"$d"
    if [ -f "$dist/$file" ] && [ "$(sha "$dist/$file")" = "$want" ]; then
        continue
    fi
    pkg=${file%%_*}
    rm -f "$dist/$file"
    log "fetching $pkg $VM_VERSION (apt-get download)"
    # apt's sandbox user cannot write to a root-owned cache; the
    # download runs as root then (it says so on stderr).
    if ! (cd "$dist" && apt-get download "$pkg=$VM_VERSION") >"$dist/fetch-$pkg.log" 2>&1; then
        apt_update
        (cd "$dist" && apt-get download "$pkg=$VM_VERSION") >"$dist/fetch-$pkg.log" 2>&1 ||
            die "apt-get download $pkg=$VM_VERSION failed (see $dist/fetch-$pkg.log); virt-manager $VM_VERSION is in Debian 12 (bookworm) main"
    fi
    [ -f "$dist/$file" ] || die "apt-get download did not deliver $file (see $dist/fetch-$pkg.log)"
    [ "$(sha "$dist/$file")" = "$want" ] || die "$file: sha256 mismatch (want $want)"
done

# ---- source tree + patches --------------------------------------------------
log "unpacking and patching into $WORK/src"
rm -rf "$WORK"
mkdir -p "$WORK/root"
for d in "${DEBS[@]}"; do
    read -r file _ <<<"$d"
    dpkg-deb -x "$dist/$file" "$WORK/root"
done
mv "$WORK/root/usr/share/virt-manager" "$WORK/src"
for p in "${PATCHES[@]}"; do
    log "  applying $(basename "$p")"
    patch -d "$WORK/src" -p1 --batch --forward --quiet <"$p" >&2 ||
        die "patch $(basename "$p") does not apply"
done
/usr/bin/python3 -m compileall -q "$WORK/src/virtManager" "$WORK/src/virtinst" >"$WORK/compile.log" 2>&1 || {
    cat "$WORK/compile.log" >&2
    die "the patched tree does not compile (python3 -m compileall)"
}

# ---- install into the prefix ----------------------------------------------
mkdir -p "$PREFIX/bin" "$PREFIX/share/glib-2.0/schemas"
mv "$WORK/src" "$PREFIX/share/virt-manager"
ln -s prefix/share/virt-manager "$WORK/src"
# virtinst/buildconfig.py reads build.cfg next to it: ui, icons and the
# settings schema (GSETTINGS_SCHEMA_DIR, set by virt-manager itself) under PREFIX
printf '[config]\nprefix = %s\n' "$PREFIX" >"$PREFIX/share/virt-manager/virtinst/build.cfg"
cp "$WORK/root/usr/share/glib-2.0/schemas/"*.gschema.* "$PREFIX/share/glib-2.0/schemas/"
glib-compile-schemas "$PREFIX/share/glib-2.0/schemas" ||
    die "glib-compile-schemas failed in $PREFIX/share/glib-2.0/schemas"
[ -d "$WORK/root/usr/share/locale" ] && cp -a "$WORK/root/usr/share/locale" "$PREFIX/share/"
for tool in virt-manager virt-install virt-clone virt-xml; do
    [ -f "$WORK/root/usr/bin/$tool" ] || continue
    sed "s|/usr/share/virt-manager|$PREFIX/share/virt-manager|" "$WORK/root/usr/bin/$tool" \
        >"$PREFIX/bin/$tool"
    chmod 755 "$PREFIX/bin/$tool"
done
rm -rf "$WORK/root"

# ---- check: virtinst loads and knows the hlfs pool (the GUI: tests/e2e/virt_manager_gui.sh)
PYTHONPATH=$PREFIX/share/virt-manager /usr/bin/python3 -c '
from virtinst import StoragePool
assert StoragePool.TYPE_HLFS == "hlfs"
' || die "the patched virt-manager does not load or lacks the hlfs pool type"

echo "$STAMP_WANT" >"$WORK/stamp"
touch "$WORK"
# Keep the two most recently built trees.
hex16=$(printf '[0-9a-f]%.0s' {1..16})
# shellcheck disable=SC2012,SC2086 # $hex16 is a glob on purpose
ls -dt "$CACHE"/virt-manager-$hex16/ 2>/dev/null | tail -n +3 | while read -r old; do
    log "removing old tree $old"
    rm -rf -- "$old"
done
log "virt-manager $VM_VERSION with HLFS: $PREFIX (run $PREFIX/bin/virt-manager)"
echo "$PREFIX"
