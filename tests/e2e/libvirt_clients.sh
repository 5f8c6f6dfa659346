#!/usr/bin/env bash
# The hlfs storage pool of our patched libvirt 11.3.0 used from client
# libraries instead of virsh, against a private libvirtd
# (tests/lib/libvirtd.sh):
#   1. Python: libvirt-python 11.3.0 compiled against the patched build
#      (venv cached in $HLFS_CACHE/libvirt-python-<key>), tests/libvirt/hlfs_pool.py;
#   2. Rust: the `virt` crate linked with the patched libvirt (pkg-config),
#      `cargo test` of libvirt-pool/rust (target dir: $CARGO_TARGET_DIR, else
#      $HLFS_CACHE/target-libvirt-rust).
# Both check that the client library they load is the one in the build's
# prefix, then run the pool lifecycle, volume create/list/info/resize/clone,
# upload + download byte-exact, wipe, delete refused while clones exist, and
# unsafe volume names refused with nothing created.
# Needs root (libvirtd's system mode). Warm: ~6 s. Cold: about a minute more
# (libvirt-python ~25 s, the virt crate ~20 s), plus libvirt-pool/build.sh's
# build when its key changed (2-7 min).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
    echo "skipped: libvirtd's system mode needs root" >&2
    exit 77
fi
# shellcheck source=SCRIPTDIR/../../scripts/common.sh
. "$root/scripts/common.sh"
need_cargo
need_apt gcc libc6-dev pkg-config python3-dev python3-venv

cli=${CARGO_TARGET_DIR:-$root/target}/release/hlfs
[ -x "$cli" ] || { echo "error: no hlfs CLI at $cli (cargo build --release -p hlfs-cli)" >&2; exit 1; }

step "libvirt build (libvirt-pool/build.sh)"
prefix=$("$root/libvirt-pool/build.sh" | tail -n1)
[ -x "$prefix/sbin/libvirtd" ] || { echo "error: build.sh printed '$prefix', which has no sbin/libvirtd" >&2; exit 1; }
pcdir=$(dirname "$(find "$prefix/lib" -name libvirt.pc -print -quit)")
libdir=$(PKG_CONFIG_PATH=$pcdir pkg-config --variable=libdir libvirt)

# shellcheck source=SCRIPTDIR/../lib/libvirtd.sh
. "$root/tests/lib/libvirtd.sh"

step "libvirt-python $LIBVIRT_PYTHON_VERSION against $prefix"
py=$(libvirt_python_venv "$prefix")

work=$(mktemp -d "${TMPDIR:-/tmp}/hlfs-libvirt-clients.XXXXXX")
on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ -n "${LIBVIRTD_LOG:-}" ] && [ -f "$LIBVIRTD_LOG" ]; then
        echo "--- last lines of libvirtd's log ($LIBVIRTD_LOG):" >&2
        tail -n 20 "$LIBVIRTD_LOG" >&2
    fi
    if [ -n "${HLFS_KEEP_WORK:-}" ]; then
        echo "keeping $work (HLFS_KEEP_WORK set)" >&2
    else
        rm -rf -- "$work"
    fi
}
trap on_exit EXIT   # libvirtd_start chains libvirtd_stop after it

step "private libvirtd"
libvirtd_start "$prefix" "$cli"
export HLFS_LIBVIRT_POOL_DIR=$work HLFS_LIBVIRT_PREFIX=$prefix HLFS_CLI=$cli

step "python: tests/libvirt/hlfs_pool.py"
LD_LIBRARY_PATH=$libdir "$py" "$root/tests/libvirt/hlfs_pool.py"

step "rust: cargo test (libvirt-pool/rust, virt crate)"
PKG_CONFIG_PATH=$pcdir LD_LIBRARY_PATH=$libdir \
    CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HLFS_CACHE/target-libvirt-rust} \
    cargo test --release --manifest-path "$root/libvirt-pool/rust/Cargo.toml"

libvirtd_stop
echo "libvirt clients: python and rust checks passed"
