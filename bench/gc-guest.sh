#!/usr/bin/env bash
# The background cleaner under a guest's sustained overwrites (issue 15): the
# test guest runs fio 4 KiB random overwrites on an hlfs volume (local
# backend, cache=none) for minutes while the host samples the size of the
# volume directory every 2 s; the log's size over time goes to
# docs/charts/gc-guest-log-size.png and the section "Background cleaner under
# a guest's sustained overwrites" of docs/benchmarks.md. Then the data is
# checked: fio verifies its last round of overwrites (each block holds its
# latest write), `hlfs fsck`, and a second boot reads the whole disk back
# with fio's checksums. Plus the same overwrites with HLFS_GC=off, shorter.
# What it does in detail: bench/gc_guest.py's docstring.
#
# A benchmark, not a test (not in scripts/test.sh): it fails only if a tool
# fails or the data does not verify.
#
# Usage (as root; installs what it needs, builds with cargo and
# qemu-patch/build.sh, the guest with tests/guest/build-guest.sh):
#   bash bench/gc-guest.sh                      # full: ~11 min (6 min of overwrites, 2 min off)
#   HLFS_BENCH_QUICK=1 bash bench/gc-guest.sh   # 1 min of overwrites, 30 s off (~4 min; writes no docs)
# Env:
#   HLFS_BENCH_QUICK=1     quick mode: results JSON and a chart in the work dir only
#   HLFS_BENCH_DIR=/tmp    where the volumes go (full: ~3 GiB at most, the HLFS_GC=off run)
#   GC_GUEST_RUNTIME=360, GC_GUEST_FINAL_MIB=512, GC_GUEST_OFF_RUNTIME=120 (0: no off run),
#   GC_GUEST_VOL_MIB=512, GC_GUEST_SAMPLE=2    see bench/gc_guest.py
#   HLFS_GC_INTERVAL, HLFS_GC_RATIO, HLFS_GC_MIN_DEAD, HLFS_GC_RATE   the cleaner's
#                          knobs (docs/design.md §13), passed on to QEMU and shown in the section
#   HLFS_BENCH_NOTE="..."  a sentence printed in the section
#   HLFS_BENCH_OUT=docs/benchmarks.md   the page whose section is replaced (bench/notes.md too,
#                          which bench/report.sh copies into that page)
#   HLFS_KEEP_WORK=1       keep the work dir (guest consoles, the chart of a quick run)
#   HLFS_CACHE             build cache (default /var/cache/hlfs-build); results JSON in
#                          $HLFS_CACHE/bench-results/gc-guest-*.json
# shellcheck disable=SC2034 # the log prefix of tests/lib/qemu.sh
E2E_NAME=gc-guest
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=../scripts/common.sh
. "$ROOT/scripts/common.sh"
# shellcheck source=../tests/lib/qemu.sh
. "$ROOT/tests/lib/qemu.sh" # set -euo pipefail, log/fail, e2e_init, qemu_init

[ "$(id -u)" = 0 ] || fail "run as root (apt-get, the guest image build)"
QUICK=${HLFS_BENCH_QUICK:-}
[ "$QUICK" = 0 ] && QUICK=""
OUT_DOC=${HLFS_BENCH_OUT:-$ROOT/docs/benchmarks.md}
case "$OUT_DOC" in /*) ;; *) OUT_DOC=$PWD/$OUT_DOC ;; esac
T0=$(date +%s)
elapsed() { echo "$(($(date +%s) - T0)) s"; }

step "packages"
need_apt python3 python3-venv util-linux coreutils
need_cargo

step "cargo build --release ($(elapsed))"
(cd "$ROOT" && cargo build --release --workspace --quiet) || fail "cargo build --release failed"

TMPDIR=${HLFS_BENCH_DIR:-/tmp} e2e_init

step "QEMU (qemu-patch/build.sh; ~1 s when cached) ($(elapsed))"
qemu_init
log "QEMU bin dir $QEMU_BIN"

step "test guest (tests/guest/build-guest.sh) ($(elapsed))"
"$ROOT/tests/guest/build-guest.sh" >"$E2E_WORK/build-guest.out" 2>"$E2E_WORK/build-guest.err" ||
    { cat "$E2E_WORK/build-guest.err" >&2; fail "tests/guest/build-guest.sh failed"; }
GUEST_DISK=$(sed -n 's/^DISK=//p' "$E2E_WORK/build-guest.out")
[ -f "$GUEST_DISK" ] || fail "no guest disk from build-guest.sh: $(cat "$E2E_WORK/build-guest.out")"

step "python venv with matplotlib ($(elapsed))"
VENV=$HLFS_CACHE/bench-venv
SYS_PY=/usr/bin/python3
[ -x "$SYS_PY" ] || SYS_PY=$(command -v python3)
if ! "$VENV/bin/python3" -c 'import matplotlib' 2>/dev/null; then
    rm -rf "$VENV"
    "$SYS_PY" -m venv "$VENV" || fail "python3 -m venv $VENV failed (python3-venv installed?)"
    "$VENV/bin/pip" install -q --disable-pip-version-check 'matplotlib>=3.6' >&2 ||
        fail "pip install matplotlib failed"
fi

step "measurements ($([ -n "$QUICK" ] && echo quick || echo full) mode) ($(elapsed))"
RESULTS_DIR=$HLFS_CACHE/bench-results
mkdir -p "$RESULTS_DIR" "$E2E_WORK/img"
RESULTS=$RESULTS_DIR/gc-guest-$(date +%Y%m%d-%H%M%S)${QUICK:+-quick}.json
HLFS_ROOT=$ROOT QEMU_BIN=$QEMU_BIN HLFS_CLI=$HLFS_CLI BENCH_WORK=$E2E_WORK/img GUEST_DISK=$GUEST_DISK \
    HLFS_BENCH_QUICK=$QUICK "$VENV/bin/python3" "$HERE/gc_guest.py" run "$RESULTS" ||
    fail "bench/gc_guest.py run failed (guest consoles in $E2E_WORK/img with HLFS_KEEP_WORK=1)"

step "report ($(elapsed))"
if [ -n "$QUICK" ]; then
    HLFS_BENCH_QUICK=$QUICK "$VENV/bin/python3" "$HERE/gc_guest.py" render "$RESULTS" "$E2E_WORK/gc-guest-log-size.png" ||
        fail "bench/gc_guest.py render failed"
    log "quick run: docs left as they are (results: $RESULTS; chart: $E2E_WORK/gc-guest-log-size.png, kept with HLFS_KEEP_WORK=1)"
else
    mkdir -p "$ROOT/docs/charts"
    "$VENV/bin/python3" "$HERE/gc_guest.py" render "$RESULTS" "$ROOT/docs/charts/gc-guest-log-size.png" \
        "$OUT_DOC" "$HERE/notes.md" >/dev/null || fail "bench/gc_guest.py render failed"
    log "results: $RESULTS"
    log "chart docs/charts/gc-guest-log-size.png; section replaced in $OUT_DOC and bench/notes.md ($(elapsed) in all)"
fi
