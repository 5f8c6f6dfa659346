#!/usr/bin/env bash
# The Debian packages (scripts/build-debs.sh) install, work and uninstall:
#   - builds hlfs, libhlfsN and libhlfs-dev into $E2E_WORK and checks their
#     contents (a man page per subcommand, completions, the library under
#     its SONAME, the header, the .so link, hlfs.pc);
#   - installs them with `apt-get install ./….deb`;
#   - from PATH: hlfs --version, the seed's snapshot.hlfs -u … -s snap1 and
#     clone.hlfs -f …%snap1 -s …, man -w hlfs-snapshot, the bash completion
#     loaded by bash-completion's own loader; pkg-config --modversion hlfs
#     and a C program built with `cc $(pkg-config --cflags --libs hlfs)`
#     that opens the volume through the packaged libhlfs;
#   - the patched QEMU (qemu-patch/build.sh) still loads its own libhlfs and
#     opens the volume while the packages are installed, and after;
#   - apt-get purge removes every file the packages listed.
# The packages are purged on every exit, so a failure leaves the machine as
# it was. Needs root (or sudo) for apt-get. 2-3 minutes on the loaded 2-core
# machine: building the packages 30-110 s (lintian 10 s), apt-get install
# 10-20 s, purge 6-12 s; the patched QEMU check is a second when cached.
E2E_NAME=packages
. "$(dirname "$0")/../lib/qemu.sh"

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo -n true 2>/dev/null || skip "needs root or password-less sudo to install packages"
    sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
e2e_init
. "$HLFS_ROOT/scripts/common.sh" # need_apt
need_apt dpkg-dev binutils lintian man-db pkg-config gcc libc6-dev bash-completion zsh

pkgs=()
installed_by_us=0
purge_pkgs() {
    [ $installed_by_us = 1 ] || return 0
    installed_by_us=0
    log "purging ${pkgs[*]}"
    $sudo apt-get purge -y -qq "${pkgs[@]}" >"$E2E_WORK/purge.log" 2>&1 ||
        log "apt-get purge ${pkgs[*]} failed: $(tail -n 5 "$E2E_WORK/purge.log")"
}
trap 'purge_pkgs; e2e_cleanup' EXIT

# --- build -----------------------------------------------------------------
start=$(date +%s)
debs_out=$("$HLFS_ROOT/scripts/build-debs.sh" --no-build "$E2E_WORK/debs" 2>"$E2E_WORK/build.log") || {
    tail -n 40 "$E2E_WORK/build.log" >&2
    fail "scripts/build-debs.sh failed (above)"
}
mapfile -t debs <<<"$debs_out"
log "built ${debs[*]##*/} in $(($(date +%s) - start)) s"
for d in "${debs[@]}"; do pkgs+=("$(dpkg-deb -f "$d" Package)"); done
libpkg=""
for p in "${pkgs[@]}"; do case $p in libhlfs[0-9]*) libpkg=$p ;; esac; done
if [ -z "$libpkg" ]; then
    log "NOTE: libhlfs.so has no SONAME in this tree, so only the hlfs package was built"
fi

for p in "${pkgs[@]}"; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
        fail "package $p is installed already ($(dpkg-query -W -f='${Version}' "$p")); this test installs and purges it: remove it first (apt-get purge $p)"
    fi
done
for f in /usr/bin/hlfs /usr/bin/snapshot.hlfs /usr/bin/clone.hlfs; do
    [ ! -e "$f" ] || fail "$f exists outside the packages ($(dpkg -S "$f" 2>&1 | head -n1)); move it away first"
done

# Contents: a man page for hlfs and every visible subcommand, at any depth.
hlfs_deb=$(printf '%s\n' "${debs[@]}" | grep '/hlfs_')
dpkg-deb -c "$hlfs_deb" | awk '{print $6}' | sed 's|^\./|/|' >"$E2E_WORK/hlfs.files"
man_want() { # CMD...: the man page names of this command and its subcommands
    local sub
    echo "$(IFS=-; echo "$*")"
    for sub in $("$HLFS_CLI" "${@:2}" --help | awk '/^Commands:/{c=1; next} /^$/{c=0} c && $1 != "help" {print $1}'); do
        man_want "$@" "$sub"
    done
}
man_want hlfs >"$E2E_WORK/man.want"
echo snapshot.hlfs >>"$E2E_WORK/man.want"
echo clone.hlfs >>"$E2E_WORK/man.want"
[ "$(wc -l <"$E2E_WORK/man.want")" -ge 25 ] ||
    fail "only $(wc -l <"$E2E_WORK/man.want") commands found in hlfs --help: $(tr '\n' ' ' <"$E2E_WORK/man.want")"
while read -r m; do
    grep -qx "/usr/share/man/man1/$m.1.gz" "$E2E_WORK/hlfs.files" || fail "the hlfs package has no man page for '$m'"
done <"$E2E_WORK/man.want"
! grep -q 'generate-man' "$E2E_WORK/hlfs.files" || fail "the hidden generate-man got a man page"
for f in /usr/bin/hlfs /usr/bin/snapshot.hlfs /usr/bin/clone.hlfs \
    /usr/share/bash-completion/completions/hlfs /usr/share/zsh/vendor-completions/_hlfs \
    /usr/share/bash-completion/completions/snapshot.hlfs /usr/share/zsh/vendor-completions/_clone.hlfs \
    /usr/share/doc/hlfs/copyright /usr/share/doc/hlfs/changelog.Debian.gz; do
    grep -qx "$f" "$E2E_WORK/hlfs.files" || fail "the hlfs package lacks $f"
done
log "ok: hlfs holds the 3 programs, $(wc -l <"$E2E_WORK/man.want") man pages, bash and zsh completions"

# --- install ---------------------------------------------------------------
vol_dir=$E2E_WORK/vols
mkdir -p "$vol_dir"
uri=local://$vol_dir/pkgvol
must "create a volume" "$HLFS_CLI" create "$uri" 64M >/dev/null
printf 'hlfs-package-test' >"$E2E_WORK/marker"
dd if="$E2E_WORK/marker" of="$E2E_WORK/marker.raw" bs=1M count=1 conv=sync status=none
must "import the marker" "$HLFS_CLI" import -n "$E2E_WORK/marker.raw" "$uri" >/dev/null

# The patched QEMU (qemu_init: cached, or built) must go on loading its own
# libhlfs. HLFS_TEST_PACKAGES_QEMU=0 leaves it out (no QEMU build at hand).
qemu_lib() { ldd "$QEMU_BIN/qemu-img" | awk '$1 ~ /^libhlfs\.so/ {print $3}'; }
qemu_lib_before="" QEMU_BIN=""
if [ "${HLFS_TEST_PACKAGES_QEMU:-1}" != 0 ]; then
    qemu_init
    qemu_lib_before=$(qemu_lib)
    log "patched qemu-img loads ${qemu_lib_before:-no libhlfs}"
fi

start=$(date +%s)
installed_by_us=1
$sudo apt-get install -y -qq --no-install-recommends "${debs[@]}" >"$E2E_WORK/install.log" 2>&1 || {
    tail -n 20 "$E2E_WORK/install.log" >&2
    fail "apt-get install ${debs[*]##*/} failed (above)"
}
log "installed ${pkgs[*]} in $(($(date +%s) - start)) s"
for p in "${pkgs[@]}"; do
    dpkg -L "$p" >>"$E2E_WORK/listed"
done
sort -u -o "$E2E_WORK/listed" "$E2E_WORK/listed"

# From PATH, as a user types them (a fresh PATH without target/release).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
[ "$(command -v hlfs)" = /usr/bin/hlfs ] || fail "hlfs on PATH is '$(command -v hlfs)', not /usr/bin/hlfs"
ver=$(must "hlfs --version" hlfs --version)
[ "$ver" = "hlfs $(dpkg-query -W -f='${Version}' hlfs | sed 's/-[^-]*$//')" ] ||
    fail "hlfs --version says '$ver', the package is $(dpkg-query -W -f='${Version}' hlfs)"
must "snapshot.hlfs from PATH" snapshot.hlfs -u "$uri" -s snap1 >/dev/null
snapshot.hlfs -u "$uri" -l | grep -qw snap1 || fail "snapshot.hlfs -l does not list snap1"
must "clone.hlfs from PATH" clone.hlfs -f "$uri%snap1" -s "local://$vol_dir/pkgclone" >/dev/null
hlfs info "local://$vol_dir/pkgclone" --output json | grep -q "pkgvol%snap1" ||
    fail "hlfs info of the clone does not name its base pkgvol%snap1"
hlfs export "local://$vol_dir/pkgclone" "$E2E_WORK/clone.raw"
cmp -s -n 1048576 "$E2E_WORK/clone.raw" "$E2E_WORK/marker.raw" || fail "the clone made by clone.hlfs does not read as its base"
log "ok: hlfs --version, snapshot.hlfs and clone.hlfs from PATH"

man -w hlfs-snapshot-create >/dev/null || fail "man -w hlfs-snapshot-create finds no page"
man hlfs-snapshot 2>/dev/null | grep -q 'revert' || fail "man hlfs-snapshot does not show the revert subcommand"
man clone.hlfs 2>/dev/null | grep -q -- '--father' || fail "man clone.hlfs does not show --father"
# bash-completion's loader finds /usr/share/bash-completion/completions/hlfs on first use.
bash -c '. /usr/share/bash-completion/bash_completion; __load_completion hlfs; complete -p hlfs' >/dev/null 2>&1 ||
    fail "bash-completion does not load a completion for hlfs"
got=$(bash -c '. /usr/share/bash-completion/completions/hlfs
    COMP_WORDS=(hlfs snap); COMP_CWORD=1; COMP_LINE="hlfs snap"; COMP_POINT=9
    $(complete -p hlfs | sed -E "s/.*-F ([^ ]+).*/\1/") hlfs snap hlfs; echo "${COMPREPLY[*]}"')
[ "$got" = snapshot ] || fail "bash completion of 'hlfs snap' gave '$got', expected 'snapshot'"
if command -v zsh >/dev/null; then
    zsh -fc 'fpath=(/usr/share/zsh/vendor-completions $fpath); autoload -Uz compinit; compinit -u; (( $+_comps[hlfs] ))' ||
        fail "zsh's compinit does not find the completion for hlfs"
fi
log "ok: man pages and bash completion (hlfs snap<TAB> -> snapshot)"

if [ -n "$libpkg" ]; then
    # pkg-config and cc, with only the system's pkg-config dirs (a patched
    # QEMU build installs its own hlfs.pc into /usr/local, which comes first).
    ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
    export PKG_CONFIG_LIBDIR=/usr/lib/$ma/pkgconfig:/usr/share/pkgconfig
    mv=$(must "pkg-config --modversion hlfs" pkg-config --modversion hlfs)
    [ "$mv" = "${ver#hlfs }" ] || fail "pkg-config says hlfs $mv, the package is ${ver#hlfs }"
    cat >"$E2E_WORK/open.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <hlfs.h>
#include <stdio.h>
#include <string.h>

/* Opens argv[1] read-only, reads its first bytes, prints them and the
 * path of the libhlfs that did it. */
int main(int argc, char **argv)
{
    hlfs_volume *vol = NULL;
    char *err = NULL, buf[512];
    Dl_info info;
    if (argc != 2) { fprintf(stderr, "usage: open URI\n"); return 2; }
    if (hlfs_open(argv[1], HLFS_OPEN_RDONLY, &vol, &err) < 0) {
        fprintf(stderr, "hlfs_open %s: %s\n", argv[1], err ? err : "?");
        return 1;
    }
    if (hlfs_pread(vol, buf, sizeof buf, 0) < 0) { fprintf(stderr, "hlfs_pread failed\n"); return 1; }
    hlfs_close(vol);
    if (!dladdr((void *)hlfs_version, &info)) { fprintf(stderr, "dladdr failed\n"); return 1; }
    printf("%.17s %s %s\n", buf, hlfs_version(), info.dli_fname);
    return 0;
}
EOF
    grep -q 'HLFS_OPEN_RDONLY' /usr/include/hlfs.h || fail "/usr/include/hlfs.h has no HLFS_OPEN_RDONLY"
    # shellcheck disable=SC2046 # pkg-config's words are separate arguments
    cc -Wall -Werror -o "$E2E_WORK/open" "$E2E_WORK/open.c" $(pkg-config --cflags --libs hlfs) ||
        fail "cc \$(pkg-config --cflags --libs hlfs) failed"
    readelf -d "$E2E_WORK/open" | grep -q "NEEDED.*\[libhlfs.so.${libpkg#libhlfs}\]" ||
        fail "the program does not NEED libhlfs.so.${libpkg#libhlfs}"
    # The packaged copy: the loader's own search, with /usr/local (where a
    # patched QEMU build installs its copy) ignored by putting the
    # multiarch dir first.
    out=$(LD_LIBRARY_PATH=/usr/lib/$ma "$E2E_WORK/open" "$uri%snap1") || fail "the C program failed: $out"
    case $out in
        "hlfs-package-test "*" /usr/lib/$ma/libhlfs.so."*) ;;
        *) fail "the C program printed '$out', expected the marker and /usr/lib/$ma/libhlfs.so.N" ;;
    esac
    log "ok: pkg-config $mv; cc \$(pkg-config --cflags --libs hlfs); read the volume through $(echo "$out" | awk '{print $NF}')"
    unset PKG_CONFIG_LIBDIR
fi

# The patched QEMU keeps its library while the packages are installed.
if [ -n "$QEMU_BIN" ]; then
    [ "$(qemu_lib)" = "$qemu_lib_before" ] ||
        fail "with the packages installed, patched qemu-img loads $(qemu_lib), not $qemu_lib_before"
    "$QEMU_BIN/qemu-img" info "hlfs:$uri%snap1" >"$E2E_WORK/qemu-info" 2>&1 ||
        fail "patched qemu-img info fails with the packages installed: $(cat "$E2E_WORK/qemu-info")"
    log "ok: patched qemu-img still loads $qemu_lib_before and reads the volume"
fi

# --- remove ----------------------------------------------------------------
start=$(date +%s)
purge_pkgs
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'installed' && fail "$p is still installed after purge"
done
left=()
while read -r f; do
    [ -d "$f" ] && [ ! -L "$f" ] && continue # shared directories (/usr/bin, …) stay
    if [ -e "$f" ] || [ -L "$f" ]; then left+=("$f"); fi
done <"$E2E_WORK/listed"
[ ${#left[@]} -eq 0 ] || fail "left after apt-get purge: ${left[*]}"
for d in /usr/share/doc/hlfs /usr/share/doc/libhlfs-dev ${libpkg:+/usr/share/doc/$libpkg}; do
    [ ! -e "$d" ] || fail "$d is left after apt-get purge"
done
! ldconfig -p | grep -qE "=> /(usr/)?lib/[^/]+/libhlfs\.so" || fail "the loader's cache still lists the packaged libhlfs"
log "ok: apt-get purge removed all $(wc -l <"$E2E_WORK/listed") listed paths in $(($(date +%s) - start)) s"

if [ -n "$QEMU_BIN" ]; then
    [ "$(qemu_lib)" = "$qemu_lib_before" ] || fail "after purge, patched qemu-img loads '$(qemu_lib)', not $qemu_lib_before"
    "$QEMU_BIN/qemu-img" info "hlfs:$uri%snap1" >/dev/null 2>&1 || fail "patched qemu-img info fails after the purge"
    log "ok: patched qemu-img works after the purge"
fi
