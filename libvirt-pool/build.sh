#!/usr/bin/env bash
# Build libvirt 11.3.0 with the HLFS storage backend (libvirt-pool/patches/*.patch).
#
#   libvirt-pool/build.sh          # build (or reuse) and print the install prefix
#   P=$(libvirt-pool/build.sh | tail -n1); "$P/sbin/libvirtd" ...; "$P/bin/virsh" ...
#
# Environment:
#   HLFS_CACHE          cache root                               [/var/cache/hlfs-build]
#   HLFS_CLI_DEFAULT    hlfs CLI path compiled into the backend  [/usr/local/bin/hlfs]
#                       (libvirtd's $HLFS_CLI overrides it at run time)
#   JOBS                parallel build jobs                      [nproc]
#   HLFS_SKIP_DEPS=1    do not touch apt/pip (everything already installed)
#   HLFS_SKIP_TESTS=1   do not build/run the storage xml2xml + schema tests
#
# Layout (everything outside the checkout):
#   $HLFS_CACHE/dist/libvirt_11.3.0.orig.tar.xz  downloaded once, sha256-checked
#   $HLFS_CACHE/venv/                            python venv with meson (shared
#                                                with qemu-patch/build.sh)
#   $HLFS_CACHE/libvirt-<key>/src/               pristine tree + patch series
#   $HLFS_CACHE/libvirt-<key>/build/             meson/ninja build tree
#   $HLFS_CACHE/libvirt-<key>/prefix/            installed libvirt: sbin/libvirtd,
#                                                bin/virsh, lib/, etc/, var/
#   $HLFS_CACHE/libvirt-<key>/stamp              inputs of the last good build
#   $HLFS_CACHE/libvirt-<key>/build.log          output of the last build
# <key> hashes the libvirt version and the patches; the stamp adds the
# configure arguments and this script's hash.  With unchanged inputs a
# run takes a moment.
#
# The build has the qemu driver, the storage driver with the dir and hlfs
# backends, secrets, remote + libvirtd; no network driver (no firewall
# backend needed), no docs.
#
# The last line printed on stdout is the install prefix; progress goes to stderr.
set -euo pipefail

LIBVIRT_VERSION=11.3.0
LIBVIRT_ORIG=libvirt_${LIBVIRT_VERSION}.orig.tar.xz
LIBVIRT_ORIG_SHA256=6bcb0c42c4580436fea262ced56f68a6afe20f7390b1bea2116718cc034a0283
# Unit tests built and run after the build (they exercise the patches);
# qemuxmlconftest (the QEMU command line of every test domain, ~4 s) has the
# disk-network-hlfs* cases and needs the mock libraries it preloads.
TESTS=(storagepoolxml2xmltest storagevolxml2xmltest storagepoolcapstest virschematest
       qemuxmlconftest)
TEST_MOCKS=(qemuxml2argv domaincaps virrandom qemucpu virpci virnuma)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${HLFS_CACHE:-/var/cache/hlfs-build}
JOBS=${JOBS:-$(nproc)}
HLFS_CLI_DEFAULT=${HLFS_CLI_DEFAULT:-/usr/local/bin/hlfs}

# shellcheck disable=SC2034 # read by build-lib.sh
BUILD_TAG=libvirt-hlfs
# shellcheck source=SCRIPTDIR/../scripts/build-lib.sh
. "$(dirname "$HERE")/scripts/build-lib.sh"

find_patches "$HERE/patches"
lock_cache

SRC_KEY=$( { echo "libvirt $LIBVIRT_VERSION"; sha "${PATCHES[@]}"; } | sha256sum | cut -c1-16)
SCRIPT_SHA=$(sha "$HERE/build.sh" | cut -c1-16)
WORK=$CACHE/libvirt-$SRC_KEY
PREFIX=$WORK/prefix

MESON=$CACHE/venv/bin/meson
[ "${HLFS_SKIP_DEPS:-0}" = 1 ] && [ ! -x "$MESON" ] && MESON=meson

CONFIGURE_ARGS=(
    --prefix="$PREFIX"
    -Dsystem=false
    -Dhlfs_cli="$HLFS_CLI_DEFAULT"
    -Dstorage_hlfs=enabled
    -Dstorage_dir=enabled
    -Ddriver_qemu=enabled -Ddriver_libvirtd=enabled -Ddriver_remote=enabled
    # libvirtd runs as root here and there is no libvirt-qemu user: QEMU runs as root
    -Dqemu_user=root -Dqemu_group=root
    -Ddriver_secrets=enabled -Ddriver_test=enabled
    -Ddriver_network=disabled -Ddriver_interface=disabled
    -Ddriver_lxc=disabled -Ddriver_ch=disabled -Ddriver_libxl=disabled
    -Ddriver_vbox=disabled -Ddriver_esx=disabled -Ddriver_hyperv=disabled
    -Ddriver_openvz=disabled -Ddriver_vmware=disabled -Ddriver_vz=disabled
    -Ddriver_bhyve=disabled
    -Dstorage_fs=disabled -Dstorage_disk=disabled -Dstorage_gluster=disabled
    -Dstorage_iscsi=disabled -Dstorage_iscsi_direct=disabled -Dstorage_lvm=disabled
    -Dstorage_mpath=disabled -Dstorage_rbd=disabled -Dstorage_scsi=disabled
    -Dstorage_vstorage=disabled -Dstorage_zfs=disabled
    -Ddocs=disabled -Dtests=enabled -Dexpensive_tests=disabled -Dnls=disabled
    -Dfirewalld=disabled -Dfirewalld_zone=disabled -Dwireshark_dissector=disabled
    -Dapparmor=disabled -Dselinux=disabled -Dsanlock=disabled -Dlibssh=disabled
    -Dlibssh2=disabled -Dsasl=disabled -Dpolkit=disabled -Dudev=disabled
    -Dpciaccess=disabled -Dnumactl=disabled -Dnumad=disabled -Dfuse=disabled
    -Dcurl=disabled -Ddtrace=disabled -Dbash_completion=disabled
)
ARGS_SIG=$(printf '%s\n' "${CONFIGURE_ARGS[@]}" | sha256sum | cut -c1-16)
STAMP_WANT="src=$SRC_KEY args=$ARGS_SIG script=$SCRIPT_SHA"

if [ -f "$WORK/stamp" ] && [ "$(cat "$WORK/stamp")" = "$STAMP_WANT" ] &&
   [ -x "$PREFIX/sbin/libvirtd" ] && [ -x "$PREFIX/bin/virsh" ]; then
    touch "$WORK"
    log "up to date: $WORK"
    echo "$PREFIX"
    exit 0
fi

# ---- dependencies ---------------------------------------------------------
APT_PKGS=(build-essential ninja-build pkg-config python3-venv python3-docutils
          xsltproc libxml2-utils libxml2-dev libglib2.0-dev libgnutls28-dev
          libtirpc-dev libjson-c-dev libnl-3-dev libnl-route-3-dev
          libcap-ng-dev libreadline-dev xz-utils dpkg-dev patch)
install_deps() {
    install_apt "${APT_PKGS[@]}"
    ensure_venv "" 'meson>=1.5'
}

if [ "${HLFS_SKIP_DEPS:-0}" != 1 ]; then
    ensure_backports libvirt "$LIBVIRT_VERSION-"
    install_deps
fi
fetch_orig libvirt "$LIBVIRT_VERSION-" "$LIBVIRT_ORIG" "$LIBVIRT_ORIG_SHA256"

# ---- source tree ----------------------------------------------------------
unpack_patched "$CACHE/dist/$LIBVIRT_ORIG"

# ---- configure --------------------------------------------------------------
LOGF=$WORK/build.log
: >"$LOGF"
if [ ! -f "$WORK/build/build.ninja" ] || [ "$(cat "$WORK/build/.hlfs-args" 2>/dev/null)" != "$ARGS_SIG" ]; then
    log "configuring (log: $LOGF)"
    rm -rf "$WORK/build"
    if ! "$MESON" setup "$WORK/build" "$WORK/src" "${CONFIGURE_ARGS[@]}" >>"$LOGF" 2>&1; then
        tail -n 40 "$LOGF" >&2
        die "configure failed (full log: $LOGF)"
    fi
    echo "$ARGS_SIG" >"$WORK/build/.hlfs-args"
fi

# ---- build ----------------------------------------------------------------
# Only what gets installed plus the tests we run: the full libvirt test
# suite would double the build time.
mapfile -t TARGETS < <("$MESON" introspect --targets "$WORK/build" |
    python3 -c '
import json, os, sys
build = sys.argv[1]
for t in json.load(sys.stdin):
    if t.get("installed"):
        for f in t["filename"]:
            print(os.path.relpath(f, build))' "$WORK/build")
[ ${#TARGETS[@]} -gt 0 ] || die "meson introspect found no installable targets"
if [ "${HLFS_SKIP_TESTS:-0}" != 1 ]; then
    for t in "${TESTS[@]}"; do TARGETS+=("tests/$t"); done
    for m in "${TEST_MOCKS[@]}"; do TARGETS+=("tests/lib${m}mock.so"); done
fi
log "building ${#TARGETS[@]} targets with $JOBS jobs (log: $LOGF)"
start=$(date +%s)
if ! ninja -C "$WORK/build" -j "$JOBS" "${TARGETS[@]}" >>"$LOGF" 2>&1; then
    grep -E 'error|Error' "$LOGF" | tail -n 30 >&2 || true
    die "build failed (full log: $LOGF)"
fi
log "built in $(( $(date +%s) - start ))s"

# ---- install ----------------------------------------------------------------
log "installing into $PREFIX"
rm -rf "$PREFIX"
if ! "$MESON" install -C "$WORK/build" --no-rebuild >>"$LOGF" 2>&1; then
    tail -n 30 "$LOGF" >&2
    die "install failed (full log: $LOGF)"
fi
# qemu.conf of this private prefix: QEMU's stdout/stderr go straight to
# var/log/libvirt/qemu/DOMAIN.log (no virtlogd daemon to run), no mount
# namespace and no cgroups for QEMU (containers, no systemd-machined).
cat >>"$PREFIX/etc/libvirt/qemu.conf" <<'CONF'

# --- hlfs test prefix (libvirt-pool/build.sh) ---
stdio_handler = "file"
namespaces = [ ]
cgroup_controllers = [ ]
CONF
[ -f "$PREFIX/lib/x86_64-linux-gnu/libvirt/storage-backend/libvirt_storage_backend_hlfs.so" ] ||
    [ -n "$(find "$PREFIX" -name libvirt_storage_backend_hlfs.so -print -quit)" ] ||
    die "the hlfs storage backend was not installed"

# ---- tests -----------------------------------------------------------------
# After the install, so a failing test still leaves a usable prefix (but no stamp).
if [ "${HLFS_SKIP_TESTS:-0}" != 1 ]; then
    for t in "${TESTS[@]}"; do
        log "test $t"
        if ! (cd "$WORK/build/tests" && VIR_TEST_DEBUG=1 abs_srcdir="$WORK/src/tests" \
                "./$t") >>"$LOGF" 2>&1; then
            tail -n 40 "$LOGF" >&2
            die "test $t failed (full log: $LOGF)"
        fi
    done
fi

echo "$STAMP_WANT" >"$WORK/stamp"
touch "$WORK"
# Keep the two most recently built trees (libvirt-<16 hex digits> only: other
# caches, e.g. libvirt-python-*, are not ours).
hex16=$(printf '[0-9a-f]%.0s' {1..16})
# shellcheck disable=SC2012,SC2086 # $hex16 is a glob on purpose; names are libvirt-<hex>
ls -dt "$CACHE"/libvirt-$hex16/ 2>/dev/null | tail -n +3 | while read -r old; do
    log "removing old tree $old"
    rm -rf -- "$old"
done
log "libvirt $LIBVIRT_VERSION with HLFS: $PREFIX"
echo "$PREFIX"
