#!/usr/bin/env bash
# The HDFS benchmark (issue 13): an hlfs volume on HDFS against a local hlfs
# volume and a raw file, and against the ceiling of a plain hdfs-native
# client, all in one run on a MiniDFSCluster of its own (tests/hdfs: one
# NameNode and 4 DataNodes in one JVM, replication 3). Writes the "HDFS"
# section of docs/benchmarks.md (bench/hdfs.md, which bench/render.py also
# includes when bench/report.sh regenerates the page).
#
#   - the ceiling (engine/examples/hdfs_ceiling.rs): one file of the same
#     size written in 1 MiB and 64 KiB appends with one hsync at the end,
#     and read back; 4 KiB appends with an hsync after each and after every 64
#   - qemu-img bench -t none on raw, local hlfs and hdfs hlfs: 1M sequential
#     write and read, 4K random write with a flush after every write (QD1)
#     and every 64 (QD32), 4K random read (QD32)
#   - fio inside the test guest on a second disk (cache=none) of each kind
# Medians of repeated runs, ratios of medians, the sides back to back within
# each repetition. A benchmark, not a test: it fails only if a tool fails.
#
# Usage (as root; installs what it needs, builds with cargo and
# qemu-patch/build.sh, the guest with tests/guest/build-guest.sh, the cluster
# with Maven once):
#   bash bench/hdfs-bench.sh                      # full: ~12 min on a quiet 2-core machine
#   HLFS_BENCH_QUICK=1 bash bench/hdfs-bench.sh   # small sizes, fewer rounds (~3 min; writes no docs)
# Env:
#   HLFS_BENCH_QUICK=1     quick mode: results JSON only, the docs stay as they are
#   HLFS_BENCH_DIR=/tmp    where the images and the cluster's storage go (full: ~6 GiB)
#   BENCH_ONLY=imgbench,fio    only these sections (imgbench includes the ceiling)
#   BENCH_REPS=5, BENCH_FIO_REPS=3   repetitions
#   HLFS_BENCH_NOTE="..."  a sentence printed at the top of the section (e.g. "the machine was shared")
#   HLFS_BENCH_OUT=docs/benchmarks.md   the page whose HDFS section is replaced
#   HLFS_CACHE             build cache (default /var/cache/hlfs-build); results JSON in
#                          $HLFS_CACHE/bench-results/hdfs-*.json
# shellcheck disable=SC2034 # the log prefix of tests/lib/qemu.sh
E2E_NAME=hdfs-bench
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
need_apt python3 util-linux coreutils maven openjdk-17-jdk-headless
need_cargo

step "cargo build --release, and the hdfs_ceiling example ($(elapsed))"
(cd "$ROOT" && cargo build --release --workspace --quiet) || fail "cargo build --release failed"
(cd "$ROOT" && cargo build --release -p hlfs --example hdfs_ceiling --quiet) ||
    fail "cargo build --release -p hlfs --example hdfs_ceiling failed"
CEILING=$HLFS_TARGET/examples/hdfs_ceiling
[ -x "$CEILING" ] || fail "no $CEILING after the build"

TMPDIR=${HLFS_BENCH_DIR:-/tmp} e2e_init
CLUSTER=$E2E_WORK/cluster
stop_cluster() {
    [ -f "$CLUSTER/pid" ] && bash "$ROOT/tests/hdfs/cluster.sh" stop "$CLUSTER" >/dev/null 2>&1 || true
    e2e_cleanup
}
trap stop_cluster EXIT

step "QEMU (qemu-patch/build.sh; ~1 s when cached) ($(elapsed))"
qemu_init
log "QEMU bin dir $QEMU_BIN"

step "test guest (tests/guest/build-guest.sh) ($(elapsed))"
"$ROOT/tests/guest/build-guest.sh" >"$E2E_WORK/build-guest.out" 2>"$E2E_WORK/build-guest.err" ||
    { cat "$E2E_WORK/build-guest.err" >&2; fail "tests/guest/build-guest.sh failed"; }
GUEST_DISK=$(sed -n 's/^DISK=//p' "$E2E_WORK/build-guest.out")
[ -f "$GUEST_DISK" ] || fail "no guest disk from build-guest.sh: $(cat "$E2E_WORK/build-guest.out")"

step "HDFS cluster (tests/hdfs/cluster.sh start; 4 DataNodes) ($(elapsed))"
rc=0
HLFS_HDFS_DATANODES=4 bash "$ROOT/tests/hdfs/cluster.sh" start "$CLUSTER" >"$E2E_WORK/cluster.out" 2>&1 || rc=$?
[ $rc = 77 ] && { cat "$E2E_WORK/cluster.out" >&2; skip "Maven Central cannot be reached to build the HDFS test cluster"; }
[ $rc = 0 ] || { tail -n 30 "$E2E_WORK/cluster.out" >&2; fail "tests/hdfs/cluster.sh start failed"; }
HDFS_URI=$(cat "$CLUSTER/uri")
export HADOOP_CONF_DIR=$CLUSTER/conf
export HLFS_INDEX_DIR=$E2E_WORK/index # the HDFS volumes' local index caches
log "cluster $HDFS_URI (storage in $CLUSTER/data)"

step "measurements ($([ -n "$QUICK" ] && echo quick || echo full) mode) ($(elapsed))"
RESULTS_DIR=$HLFS_CACHE/bench-results
mkdir -p "$RESULTS_DIR" "$E2E_WORK/img"
RESULTS=$RESULTS_DIR/hdfs-$(date +%Y%m%d-%H%M%S)${QUICK:+-quick}.json
HLFS_ROOT=$ROOT QEMU_BIN=$QEMU_BIN HLFS_CLI=$HLFS_CLI BENCH_WORK=$E2E_WORK/img GUEST_DISK=$GUEST_DISK \
    HDFS_URI=$HDFS_URI HDFS_CEILING=$CEILING HLFS_BENCH_QUICK=$QUICK HLFS_HDFS_DATANODES=4 \
    python3 "$HERE/hdfs_report.py" "$RESULTS" || fail "bench/hdfs_report.py failed"
bash "$ROOT/tests/hdfs/cluster.sh" stop "$CLUSTER" >/dev/null 2>&1 || true

step "report ($(elapsed))"
if [ -n "$QUICK" ] || [ -n "${BENCH_ONLY:-}" ]; then
    python3 "$HERE/hdfs_render.py" "$RESULTS" "$E2E_WORK/hdfs.md" "$HERE/hdfs-notes.md" ||
        fail "bench/hdfs_render.py failed"
    cat "$E2E_WORK/hdfs.md"
    log "quick or partial run: docs left as they are (results: $RESULTS)"
else
    python3 "$HERE/hdfs_render.py" "$RESULTS" "$HERE/hdfs.md" "$HERE/hdfs-notes.md" "$OUT_DOC" ||
        fail "bench/hdfs_render.py failed"
    log "results: $RESULTS"
    log "section: $HERE/hdfs.md, spliced into $OUT_DOC ($(elapsed) in all)"
fi
