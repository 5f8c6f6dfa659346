# Debian's own, unpatched QEMU for tests of `hlfs serve` (issue 16): the
# bookworm qemu-system-x86 7.2 that a user without our patch runs. The
# machine has the backports QEMU's qemu-system-data installed (for the
# patched 10.0 build), which the 7.2 packages cannot sit beside, so they are
# not installed: their .debs are downloaded and unpacked into the cache,
# and only the shared libraries they need are installed with apt.
#
# stock_qemu_init: sets STOCK_QEMU (the qemu-system-x86_64 binary),
# STOCK_QEMU_VERSION and STOCK_QEMU_ARGS (its -L firmware dirs). Returns 77
# (with STOCK_QEMU_ERROR) where apt cannot provide it.
# shellcheck shell=bash

stock_qemu_init() {
    local cache=${HLFS_CACHE:-/var/cache/hlfs-build} ver dir deb deps missing
    ver=$(apt-cache madison qemu-system-x86 2>/dev/null | awk -F'|' '$2 ~ / 1:7\.2/ { gsub(/ /, "", $2); print $2; exit }')
    if [ -z "$ver" ]; then
        STOCK_QEMU_ERROR="apt offers no qemu-system-x86 7.2 (Debian bookworm's); is the bookworm main source configured?"
        return 77
    fi
    dir=$cache/stock-qemu-${ver//[:+~]/_}
    if [ ! -x "$dir/root/usr/bin/qemu-system-x86_64" ]; then
        rm -rf "$dir.tmp"
        mkdir -p "$dir.tmp/debs"
        # qemu-system-data's version lacks the +bN binNMU suffix.
        if ! (cd "$dir.tmp/debs" && apt-get download "qemu-system-x86=$ver" "qemu-system-common=$ver" \
            "qemu-system-data=${ver%+b[0-9]*}") >"$dir.tmp/download.log" 2>&1; then
            STOCK_QEMU_ERROR="apt-get download of qemu-system-x86 $ver failed: $(tail -n 3 "$dir.tmp/download.log")"
            return 77
        fi
        for deb in "$dir.tmp"/debs/*.deb; do
            dpkg-deb -x "$deb" "$dir.tmp/root" || { STOCK_QEMU_ERROR="unpacking $deb failed"; return 1; }
        done
        # Its libraries (not qemu-system-*, which would replace the
        # backports data the patched QEMU uses; seabios and ipxe-qemu are
        # there already).
        deps=$(dpkg-deb -f "$dir.tmp"/debs/qemu-system-x86_*.deb Depends | tr ',' '\n' |
            sed 's/^ *//; s/ *(.*//; s/ *|.*//' | grep -v '^qemu-system-' | grep -v '^$' | tr '\n' ' ')
        # shellcheck disable=SC2086 # a list of package names
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $deps \
            >"$dir.tmp/apt.log" 2>&1; then
            STOCK_QEMU_ERROR="installing the libraries of qemu-system-x86 $ver failed: $(tail -n 3 "$dir.tmp/apt.log")"
            return 77
        fi
        rm -rf "$dir"
        mv "$dir.tmp" "$dir"
    fi
    missing=$(ldd "$dir/root/usr/bin/qemu-system-x86_64" | grep 'not found' || true)
    if [ -n "$missing" ]; then
        STOCK_QEMU_ERROR="Debian's qemu-system-x86_64 $ver lacks libraries: $missing"
        return 1
    fi
    STOCK_QEMU=$dir/root/usr/bin/qemu-system-x86_64
    STOCK_QEMU_VERSION=$("$STOCK_QEMU" --version | head -n1)
    STOCK_QEMU_ARGS=(-L "$dir/root/usr/share/qemu" -L /usr/share/seabios -L /usr/lib/ipxe/qemu)
    export STOCK_QEMU STOCK_QEMU_VERSION
}
