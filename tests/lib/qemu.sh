# shellcheck shell=bash
# Shared helpers for the end-to-end tests that drive the patched QEMU
# (tests/e2e/qemu_*.sh, tests/e2e/guest_*.sh) and for bench/qemu-bench.sh.
# Sourced, not run. Sourcing sets:
#   HLFS_ROOT    the checkout
#   HLFS_TARGET  the cargo release dir (${CARGO_TARGET_DIR:-$HLFS_ROOT/target}/release)
#   HLFS_CLI     the hlfs binary there
# and `set -euo pipefail`. Call e2e_init first, then qemu_init.

set -euo pipefail

HLFS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HLFS_TARGET=${CARGO_TARGET_DIR:-$HLFS_ROOT/target}/release
HLFS_CLI=$HLFS_TARGET/hlfs
export HLFS_CACHE=${HLFS_CACHE:-/var/cache/hlfs-build}

E2E_NAME=${E2E_NAME:-$(basename "$0" .sh)} # the prefix of log lines
E2E_PIDS=()
E2E_WORK=""

log() { printf '[%s] %s\n' "$E2E_NAME" "$*" >&2; }
fail() {
    printf '[%s] FAIL: %s\n' "$E2E_NAME" "$*" >&2
    exit 1
}
skip() {
    printf '[%s] SKIP: %s\n' "$E2E_NAME" "$*" >&2
    exit 77
}

# Kills only the background processes this script started, then removes the
# work dir. Runs on every exit, so a failed check leaves nothing behind.
e2e_cleanup() {
    local pid
    for pid in "${E2E_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$E2E_WORK" ] && [ -z "${HLFS_KEEP_WORK:-}" ]; then
        rm -rf -- "$E2E_WORK"
    elif [ -n "$E2E_WORK" ]; then
        log "keeping $E2E_WORK (HLFS_KEEP_WORK set)"
    fi
}

# e2e_init: makes the work dir ($E2E_WORK, under $TMPDIR or /tmp) and the
# cleanup trap.
e2e_init() {
    E2E_WORK=$(mktemp -d "${TMPDIR:-/tmp}/hlfs-$E2E_NAME.XXXXXX")
    trap e2e_cleanup EXIT
    trap 'exit 130' INT TERM
}

# qemu_init: puts the patched qemu-img/qemu-io/qemu-nbd/qemu-system-x86_64
# first in PATH (qemu-patch/build.sh: cached, about a second when unchanged,
# ~7 minutes on a fresh machine). build.sh installs $HLFS_TARGET/libhlfs.so
# as libhlfs.so.N into ${HLFS_PREFIX:-/usr/local}/lib (ldconfig) whenever the
# prefix holds another one, and checks that the binaries (no rpath) load
# that copy, so they test the library just built.
qemu_init() {
    [ -f "$HLFS_TARGET/libhlfs.so" ] ||
        fail "no $HLFS_TARGET/libhlfs.so: run 'cargo build --release' first"
    [ -x "$HLFS_CLI" ] || fail "no $HLFS_CLI: run 'cargo build --release' first"
    local out bin
    if ! out=$(HLFS_LIB_DIR="$HLFS_TARGET" "$HLFS_ROOT/qemu-patch/build.sh" 2>"$E2E_WORK/qemu-build.err"); then
        tail -n 30 "$E2E_WORK/qemu-build.err" >&2
        fail "qemu-patch/build.sh failed (see above)"
    fi
    bin=$(printf '%s\n' "$out" | tail -n1)
    [ -x "$bin/qemu-img" ] || fail "qemu-patch/build.sh printed '$bin', which has no qemu-img"
    export QEMU_BIN=$bin
    export PATH="$bin:$PATH"
    qemu-img --help | grep 'Supported formats:.* hlfs' >/dev/null ||
        fail "$bin/qemu-img has no hlfs driver"
}

# qemu_use_bin DIR: use the QEMU binaries in DIR (HLFS_QEMU_BIN of some
# scripts) instead of qemu-patch/build.sh's, with this checkout's library:
# they NEED libhlfs.so.N (the SONAME), so $E2E_WORK/lib gets that name for
# $HLFS_TARGET/libhlfs.so and goes first in LD_LIBRARY_PATH.
qemu_use_bin() {
    local abi
    abi=$(sed -n 's/^#define HLFS_ABI_VERSION \([0-9][0-9]*\).*/\1/p' "$HLFS_ROOT/engine/include/hlfs.h")
    [ -n "$abi" ] || fail "engine/include/hlfs.h defines no HLFS_ABI_VERSION"
    mkdir -p "$E2E_WORK/lib"
    ln -sfn "$HLFS_TARGET/libhlfs.so" "$E2E_WORK/lib/libhlfs.so.$abi"
    export QEMU_BIN=$1 PATH="$1:$PATH"
    export LD_LIBRARY_PATH="$E2E_WORK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# run CMD...: echo and run; its own exit status.
run() {
    echo "+ $*" >&2
    "$@"
}

# must WHAT CMD...: runs CMD, prints its output on stdout, fails the test
# (showing the output) if it exits non-zero.
must() {
    local what=$1 out rc=0
    shift
    echo "+ $*" >&2
    out=$("$@" 2>&1) || rc=$?
    [ $rc = 0 ] || fail "$what: '$*' exited $rc:
$out"
    printf '%s\n' "$out"
}

# must_fail WHAT REGEX CMD...: CMD must exit non-zero and say something
# matching the (extended, case-insensitive) REGEX on stdout or stderr.
must_fail() {
    local what=$1 re=$2 out rc=0
    shift 2
    echo "+ $* (must fail)" >&2
    out=$("$@" 2>&1) || rc=$?
    [ $rc != 0 ] || fail "$what: '$*' succeeded, expected an error matching /$re/:
$out"
    printf '%s\n' "$out" | grep -Ei -- "$re" >/dev/null ||
        fail "$what: '$*' failed (exit $rc) but its message does not match /$re/:
$out"
    log "ok ($what): $(printf '%s\n' "$out" | grep -Ei -m1 -- "$re")"
}

# guest_marker URI EXPECTED ROOT_SECTOR: the test guest's marker file in
# volume URI (or URI%snap) is EXPECTED, read offline from an export into
# $E2E_WORK (tests/guest/read-marker.sh); e2fsck of the exported root file
# system (at sector ROOT_SECTOR) finds no errors.
guest_marker() {
    local raw=$E2E_WORK/export.raw got
    rm -f "$raw"
    must "export $1" "$HLFS_CLI" export "$1" "$raw" >/dev/null
    got=$("$HLFS_ROOT/tests/guest/read-marker.sh" "$raw") || fail "read-marker.sh on the export of $1 failed"
    [ "$got" = "$2" ] || fail "marker in $1 is '$got', expected '$2'"
    e2fsck -fn "$raw?offset=$(($3 * 512))" >"$E2E_WORK/e2fsck.out" 2>&1 ||
        fail "e2fsck on the export of $1 found errors:
$(cat "$E2E_WORK/e2fsck.out")"
}

# pid_gone PID SECONDS: waits until process PID is gone (a daemon is not our
# child, so a zombie whose threads have all exited counts as gone); fails
# (returns 1) if it is still there after SECONDS.
pid_gone() {
    local _
    for _ in $(seq $(($2 * 50))); do
        if [ ! -e "/proc/$1" ] ||
            { [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" = Z ] &&
                [ "$(awk '/^Threads:/ { print $2 }' "/proc/$1/status" 2>/dev/null)" -le 1 ]; }; then
            return 0
        fi
        sleep 0.02
    done
    return 1
}

# qio WHAT [QEMU-IO OPTIONS...] IMAGE -- CMD...: runs qemu-io with each CMD as
# a -c command. Passes only if qemu-io exits 0 and printed no failure (a
# failed `read -P` prints "Pattern verification failed"; I/O errors print
# "... failed: ...").
qio() {
    local what=$1 opts=() cmds=() out rc=0 c
    shift
    while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
    [ $# -gt 0 ] || fail "qio: missing --"
    shift
    for c in "$@"; do cmds+=(-c "$c"); done
    echo "+ qemu-io ${opts[*]} $(printf -- "-c '%s' " "$@")" >&2
    out=$(qemu-io "${opts[@]}" "${cmds[@]}" 2>&1) || rc=$?
    if [ $rc != 0 ] || printf '%s\n' "$out" | grep -Ei 'verification failed|failed|error|cannot|can.t' >/dev/null; then
        fail "$what: qemu-io exited $rc:
$out"
    fi
}

# qio_must_mismatch WHAT [OPTIONS...] IMAGE -- CMD: a single `read -P`
# that must NOT verify; proves the checks above can fail at all.
qio_must_mismatch() {
    local what=$1 opts=() out rc=0
    shift
    while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
    shift
    echo "+ qemu-io ${opts[*]} -c '$1' (must mismatch)" >&2
    out=$(qemu-io "${opts[@]}" -c "$1" 2>&1) || rc=$?
    if [ $rc = 0 ] || ! printf '%s\n' "$out" | grep 'Pattern verification failed' >/dev/null; then
        fail "$what: '$1' verified (exit $rc), expected a mismatch:
$out"
    fi
}

# Accelerator for booting a stock Linux guest: KVM only if /dev/kvm is usable
# and is not PVM (kvm_pvm runs only PVM-enabled guest kernels; a Debian
# kernel hangs or aborts there), else TCG. Same rule as
# tests/guest/run-guest.sh; HLFS_GUEST_ACCEL=kvm|tcg forces one.
guest_accel() {
    local a=${HLFS_GUEST_ACCEL:-auto}
    if [ "$a" = auto ]; then
        if [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then
            a=kvm
        else
            a=tcg
        fi
    fi
    echo "$a"
}
guest_accel_args() {
    case "$(guest_accel)" in
        kvm) echo "-accel kvm -cpu host" ;;
        tcg) echo "-accel tcg" ;;
        *) fail "HLFS_GUEST_ACCEL must be kvm, tcg or auto" ;;
    esac
}

# small_tmpfs DIR SIZE: mounts a tmpfs of SIZE (e.g. 40m) on DIR (created),
# for full-disk tests; skips the test if it cannot. The EXIT trap then kills
# E2E_PIDS with SIGKILL (a QEMU or qemu-io holding files there), unmounts
# and cleans up.
small_tmpfs() {
    SMALL_TMPFS=$1
    mkdir -p "$SMALL_TMPFS"
    mount -t tmpfs -o "size=$2" "hlfs-$E2E_NAME" "$SMALL_TMPFS" || skip "cannot mount a tmpfs on $SMALL_TMPFS"
    trap small_tmpfs_cleanup EXIT
}
small_tmpfs_cleanup() {
    local pid
    for pid in "${E2E_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    umount "$SMALL_TMPFS" 2>/dev/null || umount -l "$SMALL_TMPFS" 2>/dev/null || true
    e2e_cleanup
}

# crash_seed_args: sets SEED_ARGS to (--seed N) from HLFS_CRASH_SEED, or ()
# (the crash loops pick a random seed and print it).
crash_seed_args() {
    SEED_ARGS=()
    if [ -n "${HLFS_CRASH_SEED:-}" ]; then
        [[ $HLFS_CRASH_SEED =~ ^[0-9]+$ ]] || fail "HLFS_CRASH_SEED must be a number, not '$HLFS_CRASH_SEED'"
        SEED_ARGS=(--seed "$HLFS_CRASH_SEED")
    fi
}
