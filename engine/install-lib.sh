#!/usr/bin/env bash
# Install libhlfs for C programs (QEMU's block driver, packagers):
#
#   $LIBDIR/libhlfs.so.N           the library; SONAME libhlfs.so.N, where N is
#                                  HLFS_ABI_VERSION in engine/include/hlfs.h
#   $LIBDIR/libhlfs.so -> libhlfs.so.N     the link-time name (-lhlfs)
#   $LIBDIR/pkgconfig/hlfs.pc      from engine/hlfs.pc.in (Version: the crate's)
#   $INCLUDEDIR/hlfs.h
#
# Usage: engine/install-lib.sh [options]
#   --prefix DIR      [/usr/local]
#   --libdir DIR      [PREFIX/lib]
#   --includedir DIR  [PREFIX/include]
#   --lib FILE        the built library [<checkout>/target/release/libhlfs.so,
#                     or $CARGO_TARGET_DIR/release/libhlfs.so]
#   --destdir DIR     stage under DIR (packaging); implies --no-ldconfig
#   --no-ldconfig     do not run ldconfig afterwards
#   --pc-only         print hlfs.pc for these directories on stdout, install nothing
#   -h, --help        this text
#
# Files are replaced by rename, so a running program keeps the library it
# loaded. Without --destdir/--no-ldconfig, ldconfig runs (the loader's cache
# must know libhlfs.so.N: programs linked against it carry no rpath).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
die() { printf 'install-lib.sh: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

prefix=/usr/local libdir="" includedir="" destdir="" ldconfig=1 pc_only=0
lib=${CARGO_TARGET_DIR:-$ROOT/target}/release/libhlfs.so
while [ $# -gt 0 ]; do
    case $1 in
        --prefix|--libdir|--includedir|--lib|--destdir)
            [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"
            case $1 in
                --prefix) prefix=$2 ;; --libdir) libdir=$2 ;;
                --includedir) includedir=$2 ;; --lib) lib=$2 ;;
                --destdir) destdir=$2; ldconfig=0 ;;
            esac
            shift 2 ;;
        --no-ldconfig) ldconfig=0; shift ;;
        --pc-only) pc_only=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
libdir=${libdir:-$prefix/lib}
includedir=${includedir:-$prefix/include}
for d in "$prefix" "$libdir" "$includedir"; do
    case $d in /*) ;; *) die "'$d' is not an absolute path (--prefix/--libdir/--includedir)" ;; esac
done

header=$HERE/include/hlfs.h
abi=$(sed -n 's/^#define HLFS_ABI_VERSION \([0-9][0-9]*\).*/\1/p' "$header")
[ -n "$abi" ] || die "$header defines no HLFS_ABI_VERSION"
# engine/Cargo.toml takes its version from the workspace's [workspace.package].
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$HERE/Cargo.toml" | head -n1)
if [ -z "$version" ]; then
    version=$(awk '/^\[workspace.package\]/{w=1; next} /^\[/{w=0} w && /^version *=/{gsub(/.*= *"|".*/, ""); print; exit}' "$ROOT/Cargo.toml")
fi
[ -n "$version" ] || die "no version in $HERE/Cargo.toml or $ROOT/Cargo.toml [workspace.package]"

pc() {
    # ${prefix}-relative where possible, as pkg-config --define-prefix expects.
    local l=$libdir i=$includedir
    case $l in "$prefix"/*) l="\${prefix}${l#"$prefix"}" ;; esac
    case $i in "$prefix"/*) i="\${prefix}${i#"$prefix"}" ;; esac
    sed -e "s|@prefix@|$prefix|" -e "s|@libdir@|$l|" -e "s|@includedir@|$i|" \
        -e "s|@version@|$version|" "$HERE/hlfs.pc.in"
}
if [ "$pc_only" = 1 ]; then
    pc
    exit 0
fi

[ -f "$lib" ] || die "no library at $lib; build it with 'cargo build --release' (or give --lib FILE)"
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libhlfs.so.$abi" ] ||
    die "$lib has SONAME '${soname:-none}', expected libhlfs.so.$abi (HLFS_ABI_VERSION in hlfs.h); rebuild it with 'cargo build --release'"

L=$destdir$libdir I=$destdir$includedir
mkdir -p "$L/pkgconfig" "$I"
put() { # put SRC DEST MODE: copy, then rename over DEST (unless the same:
        # an unchanged header keeps its mtime, so builds against it stay fresh)
    if cmp -s "$1" "$2"; then chmod "$3" "$2"; return 0; fi
    install -m "$3" "$1" "$2.new.$$"
    mv -f "$2.new.$$" "$2"
}
put "$lib" "$L/libhlfs.so.$abi" 0755
ln -sfn "libhlfs.so.$abi" "$L/libhlfs.so.new.$$" && mv -Tf "$L/libhlfs.so.new.$$" "$L/libhlfs.so"
put "$header" "$I/hlfs.h" 0644
pc >"$L/pkgconfig/.hlfs.pc.gen.$$"
put "$L/pkgconfig/.hlfs.pc.gen.$$" "$L/pkgconfig/hlfs.pc" 0644
rm -f "$L/pkgconfig/.hlfs.pc.gen.$$"
if [ "$ldconfig" = 1 ]; then
    command -v ldconfig >/dev/null || PATH=$PATH:/sbin:/usr/sbin
    ldconfig || die "ldconfig failed (run as root, or pass --no-ldconfig and make the loader find $L)"
fi
printf 'installed libhlfs.so.%s (%s) into %s, hlfs.h into %s, hlfs.pc into %s\n' \
    "$abi" "$version" "$L" "$I" "$L/pkgconfig" >&2
