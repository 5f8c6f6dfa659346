#!/usr/bin/env bash
# Builds the Debian packages of HLFS from this checkout into OUTDIR
# (default target/debian):
#   hlfs          /usr/bin/hlfs, snapshot.hlfs, clone.hlfs; their man pages
#                 (hlfs-SUBCOMMAND.1 for every subcommand); bash and zsh
#                 completions
#   libhlfsN      the shared library, named by its SONAME (libhlfs.so.N)
#   libhlfs-dev   hlfs.h, the libhlfs.so link and the pkg-config file hlfs.pc
#
# Built with dpkg's own tools (what dpkg-buildpackage runs underneath): cargo
# builds the binaries; `hlfs generate-man` and `hlfs completions` write the
# man pages and completions from the clap definitions; dpkg-shlibdeps
# computes Depends; dpkg-gencontrol writes each DEBIAN/control from
# packaging/debian/control.in and changelog; dpkg-deb packs. The library
# package ships a shlibs file and an ldconfig trigger. With lintian installed
# the packages are checked and an error fails the build (--no-lintian skips).
#
# Usage: scripts/build-debs.sh [--no-build] [--no-lintian] [OUTDIR]
#   --no-build    use the binaries already in target/release
# Prints the paths of the three .deb files, one a line, on stdout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/common.sh

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "build-debs: error: $*" >&2; exit 1; }
say() { echo "build-debs: $*" >&2; }

build=1 lintian=1 out=""
while [ $# -gt 0 ]; do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --no-build) build=0 ;;
        --no-lintian) lintian=0 ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) [ -z "$out" ] || die "one OUTDIR only (see --help)"; out=$1 ;;
    esac
    shift
done
target=${CARGO_TARGET_DIR:-$root/target}/release
out=${out:-${CARGO_TARGET_DIR:-$root/target}/debian}

need_apt dpkg-dev binutils gzip
umask 022
export LC_ALL=C SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}

if [ $build = 1 ]; then
    need_cargo
    say "cargo build --release -p hlfs -p hlfs-cli"
    cargo build --release --locked -p hlfs -p hlfs-cli >&2
fi
for f in hlfs snapshot_hlfs clone_hlfs libhlfs.so; do
    [ -f "$target/$f" ] || die "no $target/$f: run 'cargo build --release --workspace' (or drop --no-build)"
done

# The version: Cargo's must be the upstream part of the changelog's.
deb_version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
cargo_version=$("$target/hlfs" --version | awk '{print $2}')
[ "${deb_version%-*}" = "$cargo_version" ] ||
    die "packaging/debian/changelog is at $deb_version but the workspace at $cargo_version: add a changelog entry ($cargo_version-1) with dch or by hand"

# The library package is named by the SONAME the built library carries
# (libhlfs.so.N: libhlfsN). A library without one (a tree from before the
# versioned SONAME) gets no library packages: only hlfs is built.
soname=$(objdump -p "$target/libhlfs.so" | awk '$1 == "SONAME" {print $2}')
libpkg=""
case $soname in
    libhlfs.so.[0-9]*) libpkg=libhlfs${soname#libhlfs.so.} ;;
    "") say "warning: $target/libhlfs.so has no SONAME (engine/build.rs sets libhlfs.so.N): building hlfs only, no library packages" ;;
    *) die "$target/libhlfs.so has SONAME '$soname'; expected libhlfs.so.N" ;;
esac
if [ -n "$libpkg" ] && [ ! -x engine/install-lib.sh ]; then
    die "no engine/install-lib.sh, which lays out the library, header and hlfs.pc"
fi
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
libdir=usr/lib/$multiarch

work=$out/build
rm -rf "$work"
mkdir -p "$work/debian" "$out"
sed "s/@LIBPKG@/${libpkg:-libhlfsN}/g" packaging/debian/control.in >"$work/debian/control"
cp packaging/debian/changelog "$work/debian/changelog"

# copyright, with the statically linked crates and their licences.
{
    sed '/^$/,$d' packaging/debian/copyright
    echo " ."
    cargo tree --offline -e normal,no-proc-macro -p hlfs-cli -p hlfs --prefix none -f '{p} {l}' 2>/dev/null |
        sed -E 's/ \(\*\)$//; s/ \([^)]*\)( |$)/\1/' | awk 'NF && $1 != "hlfs" && $1 != "hlfs-cli"' |
        sort -u | awk '{printf " %s %s: ", $1, $2; $1 = $2 = ""; sub(/^  /, ""); print ($0 == "" ? "see the crate" : $0)}'
    sed -n '/^$/,$p' packaging/debian/copyright
} >"$work/copyright"
grep -q '^ serde v' "$work/copyright" || die "could not list the linked crates (cargo tree failed; run it to see why)"

stage() { echo "$work/debian/$1"; }
docs() { # PKG: copyright and changelog
    local d
    d=$(stage "$1")/usr/share/doc/$1
    install -d "$d"
    install -m 644 "$work/copyright" "$d/copyright"
    gzip -9nc packaging/debian/changelog >"$d/changelog.Debian.gz"
}
strip_exe() { strip --remove-section=.comment --remove-section=.note "$1"; }

# hlfs: the three programs under their seed names, man pages, completions.
p=$(stage hlfs)
install -d "$p/usr/bin" "$p/usr/share/man/man1" "$p/usr/share/bash-completion/completions" \
    "$p/usr/share/zsh/vendor-completions"
install -m 755 "$target/hlfs" "$p/usr/bin/hlfs"
install -m 755 "$target/snapshot_hlfs" "$p/usr/bin/snapshot.hlfs"
install -m 755 "$target/clone_hlfs" "$p/usr/bin/clone.hlfs"
for b in hlfs snapshot.hlfs clone.hlfs; do strip_exe "$p/usr/bin/$b"; done
"$target/hlfs" generate-man "$work/man" >/dev/null
for m in "$work/man"/*.1; do
    gzip -9nc "$m" >"$p/usr/share/man/man1/$(basename "$m").gz"
done
for prog in hlfs snapshot.hlfs clone.hlfs; do
    "$target/hlfs" completions bash --program "$prog" >"$p/usr/share/bash-completion/completions/$prog"
    "$target/hlfs" completions zsh --program "$prog" >"$p/usr/share/zsh/vendor-completions/_$prog"
done
chmod 644 "$p"/usr/share/bash-completion/completions/* "$p"/usr/share/zsh/vendor-completions/*
docs hlfs

# libhlfsN and libhlfs-dev: engine/install-lib.sh lays out the library
# (under its SONAME), the libhlfs.so link, hlfs.h and hlfs.pc for prefix
# /usr; the library goes to libhlfsN, stripped as dh_strip does, the rest
# to libhlfs-dev.
pkgs=(hlfs)
if [ -n "$libpkg" ]; then
    pkgs+=("$libpkg" libhlfs-dev)
    dev=$(stage libhlfs-dev) p=$(stage "$libpkg")
    engine/install-lib.sh --prefix /usr --libdir "/$libdir" --lib "$target/libhlfs.so" --destdir "$dev" 2>/dev/null ||
        die "engine/install-lib.sh failed (run it with --destdir to see why)"
    for f in "$dev/$libdir/$soname" "$dev/$libdir/libhlfs.so" "$dev/usr/include/hlfs.h" "$dev/$libdir/pkgconfig/hlfs.pc"; do
        [ -e "$f" ] || [ -L "$f" ] || die "engine/install-lib.sh did not make ${f#"$dev"}"
    done
    [ "$(readlink "$dev/$libdir/libhlfs.so")" = "$soname" ] || die "libhlfs.so does not link to $soname"
    install -d "$p/$libdir" "$p/DEBIAN"
    mv "$dev/$libdir/$soname" "$p/$libdir/$soname"
    chmod 644 "$p/$libdir/$soname"
    strip --remove-section=.comment --remove-section=.note --strip-unneeded "$p/$libdir/$soname"
    # Other packages built against libhlfs depend on this one (dpkg-shlibdeps).
    echo "libhlfs ${soname#libhlfs.so.} $libpkg (>= ${deb_version%-*})" >"$p/DEBIAN/shlibs"
    echo "activate-noawait ldconfig" >"$p/DEBIAN/triggers"
    chmod 644 "$p/DEBIAN/shlibs" "$p/DEBIAN/triggers"
    docs "$libpkg"
    docs libhlfs-dev
else
    # Only the hlfs stanza (up to the first blank line after it).
    awk -v RS= -v ORS='\n\n' 'NR == 1 || /^Package: hlfs\n/' "$work/debian/control" >"$work/debian/control.new"
    mv "$work/debian/control.new" "$work/debian/control"
fi

# Depends (dpkg-shlibdeps), control files, md5sums, and the .deb files.
cd "$work"
dpkg-shlibdeps -Tdebian/hlfs.substvars debian/hlfs/usr/bin/* 2>&1 | grep -v '^$' >&2 || true
if [ -n "$libpkg" ]; then
    dpkg-shlibdeps -Tdebian/"$libpkg".substvars "debian/$libpkg/$libdir/$soname" 2>&1 | grep -v '^$' >&2 || true
fi
grep -q 'libc6' debian/hlfs.substvars || die "dpkg-shlibdeps found no dependencies for hlfs (see above)"
debs=()
for pkg in "${pkgs[@]}"; do
    p=$(stage "$pkg")
    install -d "$p/DEBIAN"
    echo "misc:Depends=" >>"debian/$pkg.substvars"
    dpkg-gencontrol -p"$pkg" -Tdebian/"$pkg".substvars -P"$p" -fdebian/files
    (cd "$p" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0r md5sum >DEBIAN/md5sums)
    chmod 644 "$p/DEBIAN/control" "$p/DEBIAN/md5sums"
    find "$p" -depth -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch --no-dereference --date="@$SOURCE_DATE_EPOCH"
    deb=$out/${pkg}_${deb_version}_$(dpkg-architecture -qDEB_HOST_ARCH).deb
    dpkg-deb --root-owner-group -Zxz --build "$p" "$deb" >/dev/null
    debs+=("$deb")
done
cd "$root"

if [ $lintian = 1 ] && command -v lintian >/dev/null; then
    say "lintian ${debs[*]##*/}"
    lintian --fail-on error --suppress-tags initial-upload-closes-no-bugs "${debs[@]}" >&2 ||
        die "lintian found errors in the packages (above)"
fi
say "built ${debs[*]##*/} in $out"
printf '%s\n' "${debs[@]}"
