#!/usr/bin/env bash
# The C ABI as a C program gets it: libhlfs installed by engine/install-lib.sh
# into a prefix (libhlfs.so.N, the libhlfs.so link, hlfs.h, hlfs.pc), a
# program built with `pkg-config --cflags --libs hlfs` that NEEDs
# libhlfs.so.N and has no rpath, driving threads, snapshots, clones, open
# options and errors (tests/c-abi/abi_test.c). Then the patched QEMU's
# binaries: no RPATH/RUNPATH, NEEDED libhlfs.so.N, and the loader resolves
# it to the library qemu-patch/build.sh installed from this checkout.
set -euo pipefail
E2E_NAME=c_abi
. "$(dirname "$0")/../lib/qemu.sh"
e2e_init
work=$E2E_WORK
abi=$(sed -n 's/^#define HLFS_ABI_VERSION \([0-9][0-9]*\).*/\1/p' "$HLFS_ROOT/engine/include/hlfs.h")
[ -n "$abi" ] || fail "engine/include/hlfs.h defines no HLFS_ABI_VERSION"
[ -f "$HLFS_TARGET/libhlfs.so" ] || fail "no $HLFS_TARGET/libhlfs.so: run 'cargo build --release' first"

# no_rpath_needs_lib FILE: FILE has no RPATH/RUNPATH and NEEDs libhlfs.so.N.
no_rpath_needs_lib() {
    local d
    d=$(readelf -d "$1") || fail "readelf -d $1 failed"
    if printf '%s\n' "$d" | grep -E '\((RPATH|RUNPATH)\)' >&2; then
        fail "$1 has an RPATH/RUNPATH (above): it must find libhlfs.so.$abi through the loader's cache"
    fi
    printf '%s\n' "$d" | grep -F "(NEEDED)" | grep -F "[libhlfs.so.$abi]" >/dev/null ||
        fail "$1 does not NEED libhlfs.so.$abi; its NEEDED entries: $(printf '%s\n' "$d" | grep NEEDED | tr -s ' ')"
}

soname=$(readelf -d "$HLFS_TARGET/libhlfs.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libhlfs.so.$abi" ] || fail "libhlfs.so has SONAME '$soname', expected libhlfs.so.$abi"

must "install into a prefix" "$HLFS_ROOT/engine/install-lib.sh" --prefix "$work/prefix" \
    --lib "$HLFS_TARGET/libhlfs.so" --no-ldconfig >/dev/null
pc() { PKG_CONFIG_PATH=$work/prefix/lib/pkgconfig pkg-config "$@"; }
version=$(pc --modversion hlfs) || fail "pkg-config finds no hlfs in $work/prefix/lib/pkgconfig"
want=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$HLFS_ROOT/Cargo.toml" | head -n1)
[ "$version" = "$want" ] || fail "hlfs.pc says Version $version, Cargo.toml $want"
[ "$(readlink "$work/prefix/lib/libhlfs.so")" = "libhlfs.so.$abi" ] ||
    fail "libhlfs.so in the prefix is not a link to libhlfs.so.$abi"
# shellcheck disable=SC2046 # pkg-config prints several words on purpose
gcc -O1 -Wall -Werror -pthread "$HLFS_ROOT/tests/c-abi/abi_test.c" \
    $(pc --cflags --libs hlfs) -o "$work/abi_test"
no_rpath_needs_lib "$work/abi_test"
LD_LIBRARY_PATH=$work/prefix/lib "$work/abi_test" "$work"
log "abi_test passed against libhlfs.so.$abi $version from the prefix"

qemu_init
for b in qemu-img qemu-io qemu-nbd qemu-system-x86_64 qemu-storage-daemon; do
    no_rpath_needs_lib "$QEMU_BIN/$b"
    lib=$(ldd "$QEMU_BIN/$b" | sed -n "s/^[[:space:]]*libhlfs\.so\.$abi => \([^ ]*\).*/\1/p")
    [ -n "$lib" ] || fail "the loader finds no libhlfs.so.$abi for $b (qemu-patch/build.sh installs it and runs ldconfig)"
    cmp -s "$lib" "$HLFS_TARGET/libhlfs.so" ||
        fail "$b loads $lib, which is not this checkout's $HLFS_TARGET/libhlfs.so"
done
log "QEMU binaries: no rpath, NEEDED libhlfs.so.$abi, loaded from $lib (this checkout's)"
