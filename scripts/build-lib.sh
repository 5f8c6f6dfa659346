# shellcheck shell=bash
# Helpers shared by qemu-patch/build.sh and libvirt-pool/build.sh, which
# build a Debian source package from bookworm-backports with our patches.
# Sourced, not run. The caller sets BUILD_TAG (log prefix) and CACHE first.

log() { printf '[%s] %s\n' "$BUILD_TAG" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$BUILD_TAG" "$*" >&2; exit 1; }
sha() { sha256sum "$@" | awk '{print $1}'; }

BACKPORTS=/etc/apt/sources.list.d/hlfs-bookworm-backports.sources
apt_updated=0
apt_update() {
    [ $apt_updated = 1 ] && return 0
    log "apt-get update"
    apt-get update -qq >&2
    apt_updated=1
}

# debian_mirror: the URI of the Debian archive this machine's apt already
# uses for bookworm (from /etc/apt/sources.list or a .sources file under
# /etc/apt/sources.list.d), so that no mirror is named in the repository.
debian_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # deb822 stanzas: the URIs of one whose Suites has plain "bookworm".
        uri=$(awk 'BEGIN { RS = ""; FS = "\n" }
            {
                u = ""; ok = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); u = a[2] }
                    if ($i ~ /^Suites:/ && $i ~ /[ \t]bookworm([ \t]|$)/) ok = 1
                }
                if (ok && u != "") { print u; exit }
            }' "$f")
        [ -n "$uri" ] && { echo "${uri%/}"; return 0; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                                 if ($(i + 1) == "bookworm") { print $i; exit } }' "$f")
        [ -n "$uri" ] && { echo "${uri%/}"; return 0; }
    done
    return 1
}

# ensure_backports SRCPKG VERSION_PREFIX: makes the deb + deb-src lines for
# bookworm-backports known to apt unless SRCPKG's source at that version
# already is. The lines use the machine's own Debian mirror (debian_mirror).
ensure_backports() {
    apt-cache showsrc "$1" 2>/dev/null | grep "^Version: $2" >/dev/null && return 0
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        local mirror
        mirror=$(debian_mirror) ||
            die "no Debian bookworm archive in /etc/apt/sources.list{,.d}: add one (a 'deb URI bookworm main' line), then run again"
        log "adding bookworm-backports (deb, deb-src) from $mirror as $BACKPORTS"
        printf 'Types: deb deb-src\nURIs: %s\nSuites: bookworm-backports\nComponents: main\n' \
            "$mirror" >"$BACKPORTS"
    fi
    apt_updated=0
    apt_update
}

# install_apt PKG...: installs the packages that are missing.
install_apt() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'ok installed' >/dev/null || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    apt_update
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
}

# ensure_venv "MODULE..." PIP_SPEC...: a python venv in $CACHE/venv with
# meson >= 1.5 that can import each MODULE; else (re)installs PIP_SPECs.
ensure_venv() {
    local modules=$1
    shift
    if ! "$CACHE/venv/bin/python3" -c "
import sys, mesonbuild.coredata as c
for m in '$modules'.split(): __import__(m)
v = tuple(int(x) for x in c.version.split('.')[:2])
sys.exit(0 if v >= (1, 5) else 1)" 2>/dev/null; then
        log "python venv with $*"
        python3 -m venv "$CACHE/venv" >&2
        "$CACHE/venv/bin/pip" install -q --disable-pip-version-check "$@" >&2
    fi
}

# fetch_orig SRCPKG VERSION_PREFIX ORIG_FILE SHA256: puts the orig tarball
# in $CACHE/dist, checked; only it is needed (the .dsc/.debian parts may 404).
fetch_orig() {
    local pkg=$1 ver=$2 orig=$3 want=$4 dist=$CACHE/dist
    mkdir -p "$dist"
    if [ -f "$dist/$orig" ] && [ "$(sha "$dist/$orig")" = "$want" ]; then
        return 0
    fi
    rm -f "$dist/$orig"
    ensure_backports "$pkg" "$ver"
    log "fetching $orig (bookworm-backports)"
    (cd "$dist" && apt-get source --download-only -t bookworm-backports "$pkg") \
        >"$dist/fetch-$pkg.log" 2>&1 || true
    [ -f "$dist/$orig" ] || die "apt-get source did not deliver $orig (see $dist/fetch-$pkg.log)"
    [ "$(sha "$dist/$orig")" = "$want" ] || die "$orig: sha256 mismatch"
    rm -f "$dist/${pkg}_"*.dsc "$dist/${pkg}_"*.debian.tar.*
}

# unpack_patched ORIG_TARBALL: the pristine source in $WORK/src with every
# patch of "${PATCHES[@]}" applied, once (a marker file records it).
unpack_patched() {
    mkdir -p "$WORK"
    [ -f "$WORK/src/.hlfs-patched" ] && return 0
    log "unpacking and patching into $WORK/src"
    rm -rf "$WORK/src" "$WORK/build"
    mkdir -p "$WORK/src"
    tar -xf "$1" -C "$WORK/src" --strip-components=1 --no-same-owner
    local p
    for p in "${PATCHES[@]}"; do
        log "  applying $(basename "$p")"
        patch -d "$WORK/src" -p1 --batch --forward --quiet <"$p" >&2 ||
            die "patch $(basename "$p") does not apply"
    done
    touch "$WORK/src/.hlfs-patched"
}

# find_patches DIR: sets PATCHES to DIR/*.patch in order; dies if none.
find_patches() {
    shopt -s nullglob
    PATCHES=("$1"/*.patch)
    shopt -u nullglob
    [ ${#PATCHES[@]} -gt 0 ] || die "no patches in $1"
}

# lock_cache: one build at a time per $CACHE (QEMU and libvirt share it);
# the lock is held on fd 9 until the script exits.
lock_cache() {
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
}
