#!/usr/bin/env bash
# The cleaner's write-amplification benchmark (issue 6; a benchmark, not a
# test): runs engine/examples/wa_bench.rs for uniform and hot/cold random
# 4 KiB overwrites of a volume whose live data fills two thirds of its log
# budget, and plots log size and write amplification over the run into
# docs/charts/gc-log-size.png and docs/charts/gc-write-amplification.png.
# The summary lines go to stdout (paste them into docs/benchmarks.md).
#
#   bash scripts/gc-report.sh        # HLFS_WA_SIZE / HLFS_WA_SEGMENT / HLFS_WA_ROUNDS / HLFS_WA_BATCH
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/common.sh"
need_cargo
need_apt python3-venv
venv=$HLFS_CACHE/bench-venv
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    step "installing matplotlib into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'matplotlib>=3.7,<4'
fi
step "building wa_bench"
cargo build -q --release -p hlfs --features mem-backend --example wa_bench
bin=${CARGO_TARGET_DIR:-$root/target}/release/examples/wa_bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for mode in uniform hotcold; do
    step "running $mode"
    "$bin" "$mode" "$tmp/$mode.csv"
done
mkdir -p "$root/docs/charts"
"$venv/bin/python" - "$tmp" "$root/docs/charts" <<'PY'
import csv, sys, os
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
src, out = sys.argv[1], sys.argv[2]
runs = {}
for mode in ("uniform", "hotcold"):
    with open(os.path.join(src, mode + ".csv")) as f:
        runs[mode] = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
labels = {"uniform": "uniform random", "hotcold": "hot/cold (90% of writes to 10% of blocks)"}
fig, ax = plt.subplots(figsize=(8, 4.5))
for mode, rows in runs.items():
    ax.plot([r["guest_mib"] for r in rows], [r["log_mib"] for r in rows], label=labels[mode] + ": log")
live = runs["uniform"][0]["live_mib"]
ax.axhline(live, color="grey", linestyle=":", label="live data")
ax.axhline(live * 1.5, color="red", linestyle="--", label="log budget (1.5 x live)")
ax.set_xlabel("guest 4 KiB overwrites (MiB)")
ax.set_ylabel("segment files (MiB)")
ax.set_title("HLFS log size under random overwrites, cleaner on")
ax.set_ylim(0, live * 1.8)
ax.legend(fontsize=8, loc="lower right")
fig.tight_layout()
fig.savefig(os.path.join(out, "gc-log-size.png"), dpi=110)
fig, ax = plt.subplots(figsize=(8, 4.5))
for mode, rows in runs.items():
    x = [r["guest_mib"] for r in rows]
    w = [r["wa_window"] for r in rows]
    roll = [sum(w[max(0, i - 7):i + 1]) / len(w[max(0, i - 7):i + 1]) for i in range(len(w))]
    ax.plot(x, roll, label=labels[mode] + " (mean of the last 8 windows)")
    ax.plot(x, [r["wa_cumulative"] for r in rows], linestyle="--", label=labels[mode] + " (cumulative)")
ax.axhline(2.0, color="red", linestyle=":", label="goal: 2.0")
ax.set_xlabel("guest 4 KiB overwrites (MiB)")
ax.set_ylabel("backend bytes / guest bytes")
ax.set_title("HLFS write amplification (cleaner copies + checkpoints)")
ax.set_ylim(0, 3)
ax.legend(fontsize=8, loc="lower right")
fig.tight_layout()
fig.savefig(os.path.join(out, "gc-write-amplification.png"), dpi=110)
print("charts: docs/charts/gc-log-size.png docs/charts/gc-write-amplification.png")
PY
