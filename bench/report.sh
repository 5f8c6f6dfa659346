#!/usr/bin/env bash
# The benchmark report (issue 7): one command measures raw, qcow2 and hlfs in
# the same run and writes docs/benchmarks.md and docs/charts/*.png.
#
#   - qemu-img bench: 4K random overwrite (also with flushes), 1M sequential
#     write, 1M sequential and 4K random read with -t none, and how much of
#     each image the page cache holds after those runs (fincore); 4K random
#     read/write at QD1 and QD32, with flushes, 1M sequential read/write with
#     -t writeback
#   - fio inside the test guest (tests/guest/) on a second virtio disk
#   - snapshot and clone create time against mapped blocks (0 to 1M)
#   - import time: hlfs import / qemu-img convert to hlfs: vs -O qcow2 / -O raw
#   - guest boot time from each format
#   - QEMU's peak memory with each format
#   - the engine's criterion benchmark (quick mode) and its ratio table
# and then appends the hand-written analysis in bench/notes.md verbatim.
# Medians of repeated runs with their range, ratios of medians. A
# benchmark, not a test: it fails only if a tool fails, never on a number.
#
# Usage (as root; installs what it needs with apt-get and pip, builds with
# cargo and qemu-patch/build.sh, builds the guest with tests/guest/build-guest.sh):
#   bash bench/report.sh                      # full: ~30-45 min on 2 cores, ~10 GiB in $HLFS_BENCH_DIR
#   HLFS_BENCH_QUICK=1 bash bench/report.sh   # quick: small sizes, 3 repetitions (~10 min)
# Env:
#   HLFS_BENCH_QUICK=1     quick mode (also passed to the engine bench, which always runs quick)
#   HLFS_BENCH_DIR=/tmp    where the images go
#   BENCH_ONLY=a,b         only these sections: imgbench, snap, import, boot, fio
#   HLFS_BENCH_ENGINE=0    skip the engine criterion bench
#   HLFS_BENCH_OUT=docs/benchmarks.md   the report (charts go to docs/charts/ next to it)
#   CARGO_TARGET_DIR       as for cargo (default ./target)
#   HLFS_CACHE             build cache (default /var/cache/hlfs-build); the matplotlib venv is
#                          $HLFS_CACHE/bench-venv, the raw JSON of each run $HLFS_CACHE/bench-results/
# shellcheck disable=SC2034 # the log prefix of tests/lib/qemu.sh
E2E_NAME=report
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
CHARTS=$(dirname "$OUT_DOC")/charts
T0=$(date +%s)
elapsed() { echo "$(($(date +%s) - T0)) s"; }

step "packages"
need_apt python3 python3-venv curl util-linux coreutils
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
log "guest disk $GUEST_DISK"

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

ENGINE_OUT=""
if [ "${HLFS_BENCH_ENGINE:-1}" != 0 ] && [ -z "${BENCH_ONLY:-}" ]; then
    step "engine criterion bench, quick mode (cargo bench -p hlfs --bench engine) ($(elapsed))"
    ENGINE_OUT=$E2E_WORK/engine-bench.out
    (cd "$ROOT" && HLFS_BENCH_QUICK=1 HLFS_BENCH_DIR=$E2E_WORK cargo bench -p hlfs --bench engine) \
        >"$ENGINE_OUT" 2>"$E2E_WORK/engine-bench.err" ||
        { tail -n 30 "$E2E_WORK/engine-bench.err" >&2; fail "cargo bench -p hlfs --bench engine failed"; }
    sed -n '/== HLFS engine vs raw file/,$p' "$ENGINE_OUT" >&2
fi

step "measurements ($([ -n "$QUICK" ] && echo quick || echo full) mode) ($(elapsed))"
RESULTS_DIR=$HLFS_CACHE/bench-results
mkdir -p "$RESULTS_DIR"
RESULTS=$RESULTS_DIR/$(date +%Y%m%d-%H%M%S)${QUICK:+-quick}.json
mkdir -p "$E2E_WORK/img"
HLFS_ROOT=$ROOT QEMU_BIN=$QEMU_BIN HLFS_CLI=$HLFS_CLI BENCH_WORK=$E2E_WORK/img \
    GUEST_DISK=$GUEST_DISK HLFS_BENCH_QUICK=$QUICK BENCH_ONLY=${BENCH_ONLY:-} \
    "$VENV/bin/python3" "$HERE/report.py" "$RESULTS" || fail "bench/report.py failed"

step "report ($(elapsed))"
mkdir -p "$CHARTS"
"$VENV/bin/python3" "$HERE/render.py" "$RESULTS" "$OUT_DOC" "$CHARTS" "$HERE/notes.md" "$ENGINE_OUT" ||
    fail "bench/render.py failed"
log "results: $RESULTS"
log "report:  $OUT_DOC, charts in $CHARTS ($(elapsed) in all)"
sed -n '/^## Summary of ratios/,/^## How to run/p' "$OUT_DOC" | sed '$d'
