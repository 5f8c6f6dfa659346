#!/usr/bin/env bash
# qemu-img bench on a raw file, a qcow2 file and an hlfs volume in the same
# directory, in one run. Each row of the table below is one workload with
# its own cache mode (qemu-img bench -t), the same for all three formats:
# raw and qcow2 open their file with O_DIRECT under -t none, and the hlfs
# driver gets the same BDRV_O_NOCACHE flag as any driver. Every round runs
# every row, and each row runs raw, qcow2 and hlfs back to back. Before each
# timed run: sync, IMAGE_MIB of page cache written and freed (see the
# comment in bench()), and for -t none rows the images' pages dropped from
# the page cache. After each -t none run, fincore shows how much of each
# image sits in the page cache: a format that bypasses it leaves ~0. Prints
# per-run times, medians, the ratios hlfs/raw and hlfs/qcow2 (of
# throughput), the page-cache lines and each row's goal from the issue.
# Results and their discussion: docs/benchmarks.md, "QEMU: qemu-img bench".
# A benchmark, not a test: it fails only if a tool fails.
#
# Rows (QD = DEPTH, 32 by default):
#   1   4K scattered overwrite of a filled image, -t none     goal >= 1.5x raw, >= 2.0x qcow2
#   2   the same with --flush-interval=FLUSH_EVERY            goal >= 1.5x raw, >= 2.0x qcow2
#   3   4K scattered write into a fresh image, -t writeback   goal >= 1.0x raw, >= 1.3x qcow2
#   4   1M sequential write into a fresh image, -t none       goal >= 0.9x raw
#   5a  1M sequential read of a filled image, -t none         goal >= 0.9x raw
#   5b  4K scattered read of a filled image, -t none          goal >= 0.9x raw
#   x1  4K scattered write, fresh image, -t writeback, flush every FLUSH_EVERY   (earlier rows, no goal)
#   x2  4K scattered read, filled image, -t writeback, image in the page cache
#   x3  1M sequential write, fresh image, -t writeback
#   x4  1M sequential write, fresh image, -t writeback, flush every FLUSH_EVERY
#
# Usage: bench/qemu-bench.sh            (after cargo build --release)
# Env:   RUNS=5                 rounds; medians over these
#        IMAGE_MIB=1024         size of every image
#        RAND_COUNT=65536       4 KiB requests per scattered run
#        FLUSH_COUNT=16384      4 KiB requests per scattered run with flushes
#        FLUSH_EVERY=64         qemu-img bench --flush-interval for the runs with flushes
#        SEQ_COUNT=1024         1 MiB requests per sequential run
#        DEPTH=32               requests in flight (qemu-img bench -d)
#        HLFS_BENCH_DIR=/tmp    where the images go (needs ~5.5 x IMAGE_MIB)
#        ONLY="1 2 3"           run only these rows (default: all)
# (There is no CACHE knob any more: the cache mode is part of each row.)
#
# "Scattered": qemu-img bench has no random mode, only a start offset and a
# step (-S) with wrap-around modulo the image size. A step of P blocks with
# P odd and the image a power-of-two number of blocks visits every block
# exactly once per cycle, consecutive requests ~P*4 KiB apart: a fixed
# permutation with no locality any of the three formats could exploit
# (no block is written twice within a run: on a fresh image every write is
# a first write into its block, as in a new VM disk; on a filled image every
# write replaces a block written once before, as in a VM disk in use).
E2E_NAME=qemu-bench
# shellcheck source=../tests/lib/qemu.sh
. "$(dirname "$0")/../tests/lib/qemu.sh"

RUNS=${RUNS:-5}
IMAGE_MIB=${IMAGE_MIB:-1024}
RAND_COUNT=${RAND_COUNT:-65536}
SEQ_COUNT=${SEQ_COUNT:-1024}
DEPTH=${DEPTH:-32}
FLUSH_COUNT=${FLUSH_COUNT:-16384}
FLUSH_EVERY=${FLUSH_EVERY:-64}
STEP_BLOCKS=65521 # prime, so odd: a permutation of any power-of-two block count
BLOCKS=$((IMAGE_MIB * 256))
[ $((BLOCKS & (BLOCKS - 1))) = 0 ] || fail "IMAGE_MIB must be a power of two"
[ "$RAND_COUNT" -le "$BLOCKS" ] || fail "RAND_COUNT must not exceed the image's 4 KiB blocks ($BLOCKS)"
[ "$FLUSH_COUNT" -le "$BLOCKS" ] || fail "FLUSH_COUNT must not exceed the image's 4 KiB blocks ($BLOCKS)"
[ -z "${CACHE:-}" ] || log "CACHE=$CACHE is ignored: each row has its own cache mode"
command -v fincore >/dev/null || fail "no fincore (util-linux) to measure the page cache"

TMPDIR=${HLFS_BENCH_DIR:-/tmp} e2e_init
qemu_init
D=$E2E_WORK
FORMATS=(raw qcow2 hlfs)
STEP=$((STEP_BLOCKS * 4096))

# The rows. row KEY CACHE IMAGE SIZE COUNT GOAL_RAW GOAL_QCOW2 LABEL [ARGS...]
#   CACHE   qemu-img bench -t, for all three formats
#   IMAGE   fresh: created empty before the run, removed after it;
#           overwrite: created and filled (1 MiB writes, not timed) before
#             the run, removed after it, so every round overwrites the same
#             state (an hlfs volume overwritten round after round would
#             carry more garbage in each);
#           filled: the images filled once at the start, only read
#   SIZE    4k (the row is in IOPS) or 1M (MiB/s); COUNT requests
#   GOAL_*  the issue's goal for hlfs/raw and hlfs/qcow2, or - for none
#   ARGS    the rest of the qemu-img bench arguments (-w, -S, --flush-interval)
ROWS=()
declare -A R_CACHE R_IMAGE R_SIZE R_COUNT R_GOAL_RAW R_GOAL_QCOW2 R_LABEL R_ARGS
row() {
    local k=$1
    ROWS+=("$k")
    R_CACHE[$k]=$2 R_IMAGE[$k]=$3 R_SIZE[$k]=$4 R_COUNT[$k]=$5
    R_GOAL_RAW[$k]=$6 R_GOAL_QCOW2[$k]=$7 R_LABEL[$k]="$8, -t $2"
    shift 8
    R_ARGS[$k]="$*"
}
FL="--flush-interval=$FLUSH_EVERY"
row 1 none overwrite 4k "$RAND_COUNT" 1.5 2.0 "4K scattered overwrite, QD$DEPTH, filled image" -w -S "$STEP"
row 2 none overwrite 4k "$FLUSH_COUNT" 1.5 2.0 "4K scattered overwrite, QD$DEPTH, flush every $FLUSH_EVERY, filled image" -w -S "$STEP" "$FL"
row 3 writeback fresh 4k "$RAND_COUNT" 1.0 1.3 "4K scattered write, QD$DEPTH, fresh image" -w -S "$STEP"
row 4 none fresh 1M "$SEQ_COUNT" 0.9 - "1M sequential write, QD$DEPTH, fresh image" -w -S 1M
row 5a none filled 1M "$SEQ_COUNT" 0.9 - "1M sequential read, QD$DEPTH, filled image" -S 1M
row 5b none filled 4k "$RAND_COUNT" 0.9 - "4K scattered read, QD$DEPTH, filled image" -S "$STEP"
row x1 writeback fresh 4k "$FLUSH_COUNT" - - "4K scattered write, QD$DEPTH, flush every $FLUSH_EVERY, fresh image" -w -S "$STEP" "$FL"
row x2 writeback filled 4k "$RAND_COUNT" - - "4K scattered read, QD$DEPTH, filled image in the page cache" -S "$STEP"
row x3 writeback fresh 1M "$SEQ_COUNT" - - "1M sequential write, QD$DEPTH, fresh image" -w -S 1M
row x4 writeback fresh 1M "$SEQ_COUNT" - - "1M sequential write, QD$DEPTH, flush every $FLUSH_EVERY, fresh image" -w -S 1M "$FL"

if [ -n "${ONLY:-}" ]; then
    keep=()
    for k in "${ROWS[@]}"; do
        case " $ONLY " in *" $k "*) keep+=("$k") ;; esac
    done
    [ ${#keep[@]} -gt 0 ] || fail "ONLY=$ONLY names no row (rows: ${ROWS[*]})"
    ROWS=("${keep[@]}")
fi

image() { # image FMT NAME -> the filename qemu-img takes
    case $1 in
        raw) echo "$D/$2.raw" ;;
        qcow2) echo "$D/$2.qcow2" ;;
        hlfs) echo "hlfs:local://$D/$2" ;;
    esac
}
fmt_args() { # -f for raw and qcow2; an hlfs: name implies its format
    case $1 in
        raw | qcow2) echo "-f $1" ;;
        hlfs) echo "" ;;
    esac
}
create() { # create FMT NAME: a fresh, empty image
    remove "$1" "$2"
    # shellcheck disable=SC2046
    qemu-img create -q $(fmt_args "$1") "$(image "$1" "$2")" "${IMAGE_MIB}M" ||
        fail "qemu-img create $1 failed"
}
fill() { # fill FMT NAME: every block written once, 1 MiB writes (not timed)
    local out
    # shellcheck disable=SC2046
    out=$(qemu-img bench $(fmt_args "$1") -t writeback -d "$DEPTH" -w -s 1M -S 1M -c "$IMAGE_MIB" \
        --pattern=0x3c "$(image "$1" "$2")" 2>&1) || fail "filling $1 failed:
$out"
}
remove() {
    case $1 in
        raw | qcow2) rm -f "$(image "$1" "$2")" ;;
        hlfs) rm -rf "${D:?}/$2" ;; # the volume's index lives inside it too
    esac
}
files() { # files FMT NAME: the image's files, one a line (hlfs: all of the volume's)
    case $1 in
        raw | qcow2) image "$1" "$2" ;;
        hlfs) find "$D/$2" -type f ;;
    esac
}
# drop_cache FMT NAME: evicts the image's pages from the page cache, so a
# -t none run starts from the disk, whatever buffered run (a fill, a
# -t writeback row) came before. `dd iflag=nocache count=0` is
# posix_fadvise(POSIX_FADV_DONTNEED) over the whole file: it evicts only
# this file's pages, and only clean ones (bench() has just run sync).
# Chosen over `echo 1 > /proc/sys/vm/drop_caches`, which needs root and
# empties the page cache of the whole machine, including the files of
# whatever else runs on it.
drop_cache() {
    local file
    while IFS= read -r file; do
        dd if="$file" iflag=nocache count=0 status=none
    done < <(files "$1" "$2")
}
# warm_cache FMT NAME: reads the whole image into the page cache, so a
# cached read row reads from memory whatever -t none row dropped it before.
warm_cache() {
    local file
    while IFS= read -r file; do
        cat -- "$file" >/dev/null
    done < <(files "$1" "$2")
}
# cached FMT NAME: bytes of the image in the page cache (fincore's RES); for
# hlfs the sum over the volume's segment files, where its data lives.
cached() {
    local paths
    case $1 in
        raw | qcow2) paths=("$(image "$1" "$2")") ;;
        hlfs) paths=("$D/$2"/seg-*) ;;
    esac
    fincore --bytes --noheadings --output RES "${paths[@]}" | awk '{ s += $1 } END { printf "%d\n", s }'
}
# bench FMT NAME CACHE PREP ARGS...: one qemu-img bench run; prints "SECONDS
# WALL", the timed part (qemu-img's "Run completed in") and the wall time of
# the whole process (open + run + close, which for hlfs includes the final
# flush and checkpoint). PREP: drop (the image's pages out of the page
# cache), warm (all of them in) or - (as they are).
bench() {
    local f=$1 name=$2 cache=$3 prep=$4 out t0 t1 secs
    shift 4
    # Same start for every run: (1) write back what earlier runs left
    # dirty, or the kernel throttles this run's writes for them (and dirty
    # pages cannot be dropped); (2) on a VM that hands freed memory back to
    # the host (free page reporting, as here) the first touch of a page is
    # slow, so whichever run came first after a big free would pay for it:
    # write and delete IMAGE_MIB of page cache just before (after the
    # drop, which frees pages too), so every run writes into pages the host
    # backs. (None of this is timed.)
    sync
    case $prep in
        drop) drop_cache "$f" "$name" ;;
        warm) warm_cache "$f" "$name" ;;
    esac
    dd if=/dev/zero of="$D/prewarm" bs=1M count="$IMAGE_MIB" status=none
    rm -f "$D/prewarm"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2046
    out=$(qemu-img bench $(fmt_args "$f") -t "$cache" -d "$DEPTH" "$@" "$(image "$f" "$name")" 2>&1) ||
        fail "qemu-img bench $f -t $cache $* failed:
$out"
    t1=$(date +%s.%N)
    secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
    [ -n "$secs" ] || fail "no 'Run completed' line from qemu-img bench:
$out"
    echo "$secs $(awk "BEGIN { printf \"%.3f\", $t1 - $t0 }")"
}

declare -A T W C # T[row,fmt] = "s1 s2 ...", W = wall times, C = bytes in the page cache after -t none runs
log "dir $D ($(findmnt -no FSTYPE -T "$D")), ${IMAGE_MIB} MiB images, $RUNS rounds, depth $DEPTH, cache mode per row"
log "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# Filled images for the read rows: every block written once.
for f in "${FORMATS[@]}"; do
    create "$f" fill
    fill "$f" fill
done

for r in $(seq "$RUNS"); do
    for k in "${ROWS[@]}"; do
        # Each row runs the three formats back to back, so all three see the
        # same machine conditions; the ratios are steadier than the absolutes.
        for f in "${FORMATS[@]}"; do
            extra=()
            case ${R_IMAGE[$k]} in
                fresh) name=w; create "$f" w ;;
                overwrite) name=w; create "$f" w; fill "$f" w ;;
                filled) name=fill ;;
            esac
            case ${R_CACHE[$k]},${R_IMAGE[$k]} in
                none,*) prep=drop ;;
                *,filled) prep=warm ;; # a cached read: all of the image in memory
                *) prep=- ;;
            esac
            if [[ " ${R_ARGS[$k]} " = *" -w "* ]]; then
                extra+=(--pattern=0xa5)
            elif [ "${R_SIZE[$k]}" = 4k ]; then
                extra+=(-o $(((r * 7919 % BLOCKS) * 4096))) # scattered reads start elsewhere each round
            fi
            # shellcheck disable=SC2086 # R_ARGS is a list of words
            read -r s w < <(bench "$f" "$name" "${R_CACHE[$k]}" "$prep" -s "${R_SIZE[$k]}" \
                -c "${R_COUNT[$k]}" ${R_ARGS[$k]} "${extra[@]}")
            T[$k,$f]+="$s " W[$k,$f]+="$w "
            if [ "${R_CACHE[$k]}" = none ]; then
                C[$k,$f]+="$(cached "$f" "$name") "
            fi
            if [ "$name" = w ]; then
                remove "$f" w
            fi
        done
    done
    log "round $r/$RUNS done (load $(cut -d' ' -f1 /proc/loadavg))"
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$LOAD_START" "$LOAD_END" \
    "$(for k in "${ROWS[@]}"; do
        printf '%s|%s|%s|%s|%s|%s|%s|%s\n' "$k" "${R_CACHE[$k]}" "${R_SIZE[$k]}" "${R_COUNT[$k]}" \
            "${R_GOAL_RAW[$k]}" "${R_GOAL_QCOW2[$k]}" "${R_ARGS[$k]}" "${R_LABEL[$k]}"
    done)" \
    "$(for k in "${!T[@]}"; do printf '%s=%s|%s|%s\n' "$k" "${T[$k]}" "${W[$k]}" "${C[$k]:-}"; done)" <<'EOF'
import statistics, sys
load0, load1 = sys.argv[1], sys.argv[2]
FORMATS = ("raw", "qcow2", "hlfs")
MIB = 1 << 20
rows = []
for line in sys.argv[3].splitlines():
    k, cache, size, count, g_raw, g_qcow2, args, label = line.split("|", 7)
    bs = 4096 if size == "4k" else MIB
    rows.append(dict(key=k, cache=cache, n=int(count), bytes=int(count) * bs,
                     unit="IOPS" if size == "4k" else "MiB/s", write=" -w " in f" {args} ",
                     goals={"raw": g_raw, "qcow2": g_qcow2}, label=label))
T, W, C = {}, {}, {}
for line in sys.argv[4].splitlines():
    key, vals = line.split("=", 1)
    t, w, c = vals.split("|")
    k, f = key.split(",")
    T[k, f] = [float(x) for x in t.split()]
    W[k, f] = [float(x) for x in w.split()]
    C[k, f] = [int(x) for x in c.split()]

def thr(r, f):  # requests per second; for 1 MiB requests that is MiB/s
    return r["n"] / statistics.median(T[r["key"], f])

# A -t none row counts only if hlfs bypassed the page cache as raw and qcow2
# do: more than 5 % of the bytes it moved left in the cache after any round
# means the row measured (partly) the page cache, not the disk.
def bypassed(r):
    return r["cache"] != "none" or max(C[r["key"], "hlfs"]) <= 0.05 * r["bytes"]

print(f"\nload average: {load0} at start, {load1} at end")
print("\nper-run timed seconds (qemu-img 'Run completed'), then wall seconds incl. open/close:")
for r in rows:
    for f in FORMATS:
        print(f"  {r['key']:3} {f:5} run: {' '.join(f'{x:.3f}' for x in T[r['key'], f])}"
              f"   wall: {' '.join(f'{x:.2f}' for x in W[r['key'], f])}")

print("\n| row | workload | raw | qcow2 | hlfs |   (median wall seconds per qemu-img run, incl. open and close)")
print("|---|---|---|---|---|")
for r in rows:
    print(f"| {r['key']} | {r['label']} | "
          + " | ".join(f"{statistics.median(W[r['key'], f]):.2f} s" for f in FORMATS) + " |")

print("\npage cache after the -t none runs (fincore; hlfs: its seg-* files; the largest of the rounds):")
for r in rows:
    if r["cache"] != "none":
        continue
    mib = {f: max(C[r["key"], f]) / MIB for f in FORMATS}
    verb = "written" if r["write"] else "read"
    mark = "" if bypassed(r) else "   <-- hlfs: does not count (page cache not bypassed)"
    print(f"  row {r['key']:2} {r['label']}: page cache after run: raw {mib['raw']:.0f} MiB, "
          f"qcow2 {mib['qcow2']:.0f} MiB, hlfs {mib['hlfs']:.0f} MiB "
          f"(of {r['bytes'] / MIB:.0f} MiB {verb}){mark}")

print("\nmedians of the timed runs, ratios of hlfs's throughput, and the issue's goals:\n")
print("| row | workload | raw | qcow2 | hlfs | hlfs/raw | hlfs/qcow2 | goal | verdict |")
print("|---|---|---:|---:|---:|---:|---:|---|---|")
for r in rows:
    t = {f: thr(r, f) for f in FORMATS}
    ratio = {o: t["hlfs"] / t[o] for o in ("raw", "qcow2")}
    goals = [(o, float(g)) for o, g in r["goals"].items() if g != "-"]
    goal = ", ".join(f">= {g:.1f}x {o}" for o, g in goals) or "–"
    if not goals:
        verdict = "–"
    elif not bypassed(r):
        verdict = "does not count (page cache not bypassed)"
    else:
        verdict = ", ".join(f"{o} {'met' if ratio[o] >= g else 'MISSED'}" for o, g in goals)
    print(f"| {r['key']} | {r['label']} | "
          + " | ".join(f"{t[f]:,.0f} {r['unit']}" for f in FORMATS)
          + f" | {ratio['raw']:.2f} | {ratio['qcow2']:.2f} | {goal} | {verdict} |")
EOF
