#!/usr/bin/env bash
# Build QEMU 10.0.2 with the HLFS block driver (qemu-patch/patches/*.patch).
#
#   qemu-patch/build.sh            # build (or reuse) and print the bin dir
#   eval "PATH=$(qemu-patch/build.sh | tail -n1):\$PATH"
#
# Environment:
#   HLFS_CACHE        cache root                [/var/cache/hlfs-build]
#   HLFS_LIB_DIR      directory with libhlfs.so [<checkout>/target/release]
#   HLFS_PREFIX       where libhlfs is installed for QEMU to build against
#                     and load (lib/, include/, lib/pkgconfig/)  [/usr/local]
#   JOBS              parallel build jobs       [nproc]
#   HLFS_SKIP_DEPS=1  do not touch apt/pip (everything already installed)
#
# Layout (everything outside the checkout):
#   $HLFS_CACHE/dist/qemu_10.0.2+ds.orig.tar.xz   downloaded once, sha256-checked
#   $HLFS_CACHE/venv/                            python venv with meson, pycotap
#   $HLFS_CACHE/qemu-<key>/src/                  pristine tree + patch series
#   $HLFS_CACHE/qemu-<key>/build/                meson/ninja build tree
#   $HLFS_CACHE/qemu-<key>/bin/                  qemu-img qemu-io qemu-nbd
#                                                qemu-system-x86_64
#   $HLFS_CACHE/qemu-<key>/share/qemu/           keymaps, option ROMs
#   $HLFS_CACHE/qemu-<key>/stamp                 inputs of the last good build
#   $HLFS_CACHE/qemu-<key>/build.log             output of the last build
# <key> hashes the QEMU version, the patches and hlfs.h; the stamp adds the
# hash of this script.  libhlfs is installed like any shared library
# (engine/install-lib.sh): $HLFS_PREFIX/lib/libhlfs.so.N (N: the SONAME's
# HLFS_ABI_VERSION), the libhlfs.so link, hlfs.h and hlfs.pc, then
# ldconfig.  QEMU finds it through pkg-config and its binaries NEED
# libhlfs.so.N with no rpath, so the system's loader resolves it: when only
# the library changed, each run just installs it again (by rename: running
# QEMUs keep the copy they loaded) and nothing is relinked.  Every run
# checks that the binaries have no RPATH/RUNPATH and that the loader gives
# them this checkout's library.  With unchanged inputs a run takes a moment.
#
# The last line printed on stdout is the bin dir; progress goes to stderr.
set -euo pipefail

QEMU_VERSION=10.0.2
QEMU_ORIG=qemu_${QEMU_VERSION}+ds.orig.tar.xz
QEMU_ORIG_SHA256=0901da33844a331bf8b3602b9c1fbd178e60b737c8e3ade678255bd090c9b9f1
# ninja targets; each is installed under its base name. qemu-storage-daemon
# serves volumes to unpatched clients (`hlfs serve`: NBD, vhost-user-blk).
TARGETS=(qemu-img qemu-io qemu-nbd qemu-system-x86_64 storage-daemon/qemu-storage-daemon)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
HLFS_INCLUDE_DIR=$ROOT/engine/include
HLFS_LIB_DIR=${HLFS_LIB_DIR:-$ROOT/target/release}
PREFIX=${HLFS_PREFIX:-/usr/local}
CACHE=${HLFS_CACHE:-/var/cache/hlfs-build}
JOBS=${JOBS:-$(nproc)}

# shellcheck disable=SC2034 # read by build-lib.sh
BUILD_TAG=qemu-hlfs
# shellcheck source=SCRIPTDIR/../scripts/build-lib.sh
. "$ROOT/scripts/build-lib.sh"

[ -f "$HLFS_INCLUDE_DIR/hlfs.h" ] || die "no hlfs.h in $HLFS_INCLUDE_DIR"
[ -f "$HLFS_LIB_DIR/libhlfs.so" ] ||
    die "no libhlfs.so in $HLFS_LIB_DIR (build the engine first: cargo build --release -p engine)"
HLFS_LIB_DIR=$(cd "$HLFS_LIB_DIR" && pwd)
case $PREFIX in /*) ;; *) die "HLFS_PREFIX='$PREFIX' is not an absolute path" ;; esac
ABI=$(sed -n 's/^#define HLFS_ABI_VERSION \([0-9][0-9]*\).*/\1/p' "$HLFS_INCLUDE_DIR/hlfs.h")
[ -n "$ABI" ] || die "$HLFS_INCLUDE_DIR/hlfs.h defines no HLFS_ABI_VERSION"
find_patches "$HERE/patches"
lock_cache

SRC_KEY=$( { echo "qemu $QEMU_VERSION"; sha "${PATCHES[@]}" "$HLFS_INCLUDE_DIR/hlfs.h"; } |
           sha256sum | cut -c1-16)
SCRIPT_SHA=$(sha "$HERE/build.sh" | cut -c1-16)
WORK=$CACHE/qemu-$SRC_KEY
BIN=$WORK/bin
STAMP_WANT="src=$SRC_KEY script=$SCRIPT_SHA prefix=$PREFIX"

have_bins() { local t; for t in "${TARGETS[@]}"; do [ -x "$BIN/${t##*/}" ] || return 1; done; }

# ---- the library --------------------------------------------------------------
# Installed (again) whenever the prefix does not hold this checkout's
# library and header, so that the binaries load what was just built, also
# after another checkout installed its own.
install_lib() {
    if cmp -s "$HLFS_LIB_DIR/libhlfs.so" "$PREFIX/lib/libhlfs.so.$ABI" &&
       cmp -s "$HLFS_INCLUDE_DIR/hlfs.h" "$PREFIX/include/hlfs.h" &&
       [ -f "$PREFIX/lib/pkgconfig/hlfs.pc" ] &&
       "$(command -v ldconfig || echo /sbin/ldconfig)" -p | grep -F "libhlfs.so.$ABI " >/dev/null; then
        return 0
    fi
    log "installing libhlfs.so.$ABI into $PREFIX (engine/install-lib.sh)"
    "$ROOT/engine/install-lib.sh" --prefix "$PREFIX" --lib "$HLFS_LIB_DIR/libhlfs.so" >&2 ||
        die "installing libhlfs into $PREFIX failed; run as root, or set HLFS_PREFIX to a prefix you may write whose lib/ the loader searches (/etc/ld.so.conf.d)"
}

# check_bins: no RPATH/RUNPATH, NEEDED libhlfs.so.N, resolved by the loader
# to $PREFIX's copy, and every symbol the binaries use is there.
check_bins() {
    local t b d got want
    want=$(readlink -f "$PREFIX/lib/libhlfs.so.$ABI")
    for t in "${TARGETS[@]}"; do
        b=$BIN/${t##*/}
        d=$(readelf -d "$b")
        if printf '%s\n' "$d" | grep -E '\((RPATH|RUNPATH)\)' >&2; then
            die "$b has an RPATH/RUNPATH (above); rebuild it (rm -rf $WORK)"
        fi
        printf '%s\n' "$d" | grep -F "[libhlfs.so.$ABI]" >/dev/null ||
            die "$b does not NEED libhlfs.so.$ABI; rebuild it (rm -rf $WORK)"
        got=$(ldd "$b" | sed -n "s/^[[:space:]]*libhlfs\.so\.$ABI => \([^ ]*\).*/\1/p")
        [ -n "$got" ] && [ "$(readlink -f "$got")" = "$want" ] ||
            die "$b loads libhlfs.so.$ABI from '${got:-nowhere}', not $PREFIX/lib: another copy comes first in the loader's path (ldconfig -p | grep libhlfs); remove it or set HLFS_PREFIX to its prefix"
    done
    LD_BIND_NOW=1 "$BIN/qemu-img" --version >/dev/null ||
        die "$BIN/qemu-img does not start with $want (a symbol it needs is missing?); rebuild (rm -rf $WORK)"
}

install_lib
if [ -f "$WORK/stamp" ] && [ "$(cat "$WORK/stamp")" = "$STAMP_WANT" ] && have_bins; then
    check_bins
    touch "$WORK"
    log "up to date: $WORK"
    echo "$BIN"
    exit 0
fi

# ---- dependencies ---------------------------------------------------------
APT_PKGS=(build-essential ninja-build pkg-config flex bison python3-venv
          libglib2.0-dev libpixman-1-dev libfdt-dev libslirp-dev zlib1g-dev
          xz-utils dpkg-dev patch seabios ipxe-qemu patchelf)
install_deps() {
    install_apt "${APT_PKGS[@]}"
    # Option ROMs, keymaps etc. matching QEMU 10 (the +ds tarball has none).
    if ! dpkg-query -W -f='${Version}' qemu-system-data 2>/dev/null | grep "^1:$QEMU_VERSION" >/dev/null; then
        apt_update
        log "apt-get install -t bookworm-backports qemu-system-data"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -t bookworm-backports qemu-system-data >&2
    fi
    ensure_venv pycotap 'meson>=1.5' pycotap==1.3.1
}

if [ "${HLFS_SKIP_DEPS:-0}" != 1 ]; then
    ensure_backports qemu "1:$QEMU_VERSION"
    install_deps
fi
fetch_orig qemu "1:$QEMU_VERSION" "$QEMU_ORIG" "$QEMU_ORIG_SHA256"

# ---- source tree ----------------------------------------------------------
unpack_patched "$CACHE/dist/$QEMU_ORIG"

# QEMU builds against the installed library (pkg-config hlfs, from
# $PREFIX), so configure's arguments do not depend on where the checkout
# is: a clone elsewhere (CI) reuses the build.
rm -rf "$WORK/hlfs" # the rpath'd copy of earlier versions of this script

# ---- configure --------------------------------------------------------------
CONFIGURE_ARGS=(
    --prefix="$WORK"
    --python="$CACHE/venv/bin/python3"
    --target-list=x86_64-softmmu
    --enable-kvm
    --enable-hlfs
    --enable-tools
    --disable-install-blobs
    --firmwarepath=/usr/share/seabios:/usr/lib/ipxe/qemu:/usr/share/qemu
    --disable-docs --disable-gtk --disable-sdl --disable-opengl
    --disable-virglrenderer --disable-guest-agent --disable-plugins
    --disable-capstone --disable-werror
)
if [ "${HLFS_SKIP_DEPS:-0}" = 1 ] && [ ! -x "$CACHE/venv/bin/python3" ]; then
    CONFIGURE_ARGS[1]=--python=python3
fi
# Only $PREFIX's hlfs.pc: the caller's PKG_CONFIG_PATH neither changes what
# QEMU links against nor forces a reconfigure.
export PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
ARGS_SIG=$( { printf '%s\n' "${CONFIGURE_ARGS[@]}"; echo "$PKG_CONFIG_PATH"; } | sha256sum | cut -c1-16)
LOGF=$WORK/build.log
: >"$LOGF"

if [ ! -f "$WORK/build/build.ninja" ] || [ "$(cat "$WORK/build/.hlfs-args" 2>/dev/null)" != "$ARGS_SIG" ]; then
    log "configuring (log: $LOGF)"
    rm -rf "$WORK/build"
    mkdir -p "$WORK/build"
    if ! (cd "$WORK/build" && "$WORK/src/configure" "${CONFIGURE_ARGS[@]}") >>"$LOGF" 2>&1; then
        tail -n 40 "$LOGF" >&2
        die "configure failed (full log: $LOGF)"
    fi
    echo "$ARGS_SIG" >"$WORK/build/.hlfs-args"
fi

# ---- build ----------------------------------------------------------------
log "building ${TARGETS[*]} with $JOBS jobs (log: $LOGF)"
start=$(date +%s)
if ! ninja -C "$WORK/build" -j "$JOBS" "${TARGETS[@]}" >>"$LOGF" 2>&1; then
    grep -E 'error|Error' "$LOGF" | tail -n 30 >&2 || true
    die "build failed (full log: $LOGF)"
fi
log "built in $(( $(date +%s) - start ))s"

# ---- install ----------------------------------------------------------------
# Firmware: SeaBIOS, iPXE and qemu-system-data (option ROMs such as
# kvmvapic.bin) are found through --firmwarepath; keymaps also from
# $WORK/share/qemu, the data dir relative to $BIN.
# Meson links the build tree's binaries with a RUNPATH to the directories
# of their pkg-config libraries (here $PREFIX/lib) and drops it when it
# installs them; these copies are installed without meson, so patchelf
# drops it the same way: the loader finds libhlfs.so.N as a system library.
command -v patchelf >/dev/null ||
    die "patchelf is missing (apt-get install patchelf); it removes the build tree's RUNPATH from the installed binaries"
mkdir -p "$BIN" "$WORK/share/qemu"
for t in "${TARGETS[@]}"; do
    install -m 0755 "$WORK/build/$t" "$BIN/${t##*/}.new"
    patchelf --remove-rpath "$BIN/${t##*/}.new"
    mv -f "$BIN/${t##*/}.new" "$BIN/${t##*/}"
done
rm -rf "$WORK/share/qemu/keymaps"
cp -r "$WORK/src/pc-bios/keymaps" "$WORK/share/qemu/"

# ---- smoke test ---------------------------------------------------------------
"$BIN/qemu-img" --help | grep 'Supported formats:.* hlfs' >/dev/null ||
    die "$BIN/qemu-img lacks the hlfs driver"
check_bins
echo "$STAMP_WANT" >"$WORK/stamp"
touch "$WORK"
# Keep the two most recently built trees (about 0.9 GB each).
ls -dt "$CACHE"/qemu-*/ 2>/dev/null | tail -n +3 | while read -r old; do
    log "removing old tree $old"
    rm -rf -- "$old"
done
log "QEMU $QEMU_VERSION with HLFS: $BIN"
echo "$BIN"
