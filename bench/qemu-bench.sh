#!/usr/bin/env bash
# qemu-img bench on a raw file, a qcow2 file and an hlfs volume in the same
# directory, in one run: 4 KiB scattered writes into fresh images (without
# flushes, and with a flush every 64 writes), 4 KiB scattered reads of
# filled images, 1 MiB sequential writes into fresh images (also both
# ways). Before each timed run: sync, and IMAGE_MIB of page cache written and
# freed (see the comment in bench()). Prints per-run times, medians and the
# ratios hlfs/raw and hlfs/qcow2 (of throughput), then the issue's goals.
# Results and their discussion: docs/benchmarks.md, "QEMU: qemu-img bench".
# A benchmark, not a test: it fails only if a tool fails.
#
# Usage: bench/qemu-bench.sh            (after cargo build --release)
# Env:   RUNS=5                 rounds; medians over these
#        IMAGE_MIB=1024         size of every image
#        RAND_COUNT=65536       4 KiB requests per scattered run
#        FLUSH_COUNT=16384      4 KiB requests per scattered run with flushes
#        FLUSH_EVERY=64         qemu-img bench --flush-interval for the runs with flushes
#        SEQ_COUNT=1024         1 MiB requests per sequential run
#        DEPTH=32               requests in flight (qemu-img bench -d)
#        CACHE=writeback        qemu-img bench -t (raw, qcow2; hlfs has its own log buffer)
#        HLFS_BENCH_DIR=/tmp    where the images go (needs ~3.5 x IMAGE_MIB)
#
# "Scattered": qemu-img bench has no random mode, only a start offset and a
# step (-S) with wrap-around modulo the image size. A step of P blocks with
# P odd and the image a power-of-two number of blocks visits every block
# exactly once per cycle, consecutive requests ~P*4 KiB apart: a fixed
# permutation with no locality any of the three formats could exploit
# (no block is written twice within a run, so every write is a first write
# into the block, as in a fresh VM disk).
E2E_NAME=qemu-bench
# shellcheck source=../tests/lib/qemu.sh
. "$(dirname "$0")/../tests/lib/qemu.sh"

RUNS=${RUNS:-5}
IMAGE_MIB=${IMAGE_MIB:-1024}
RAND_COUNT=${RAND_COUNT:-65536}
SEQ_COUNT=${SEQ_COUNT:-1024}
DEPTH=${DEPTH:-32}
CACHE=${CACHE:-writeback}
FLUSH_COUNT=${FLUSH_COUNT:-16384}
FLUSH_EVERY=${FLUSH_EVERY:-64}
STEP_BLOCKS=65521 # prime, so odd: a permutation of any power-of-two block count
BLOCKS=$((IMAGE_MIB * 256))
[ $((BLOCKS & (BLOCKS - 1))) = 0 ] || fail "IMAGE_MIB must be a power of two"
[ "$RAND_COUNT" -le "$BLOCKS" ] || fail "RAND_COUNT must not exceed the image's 4 KiB blocks ($BLOCKS)"

TMPDIR=${HLFS_BENCH_DIR:-/tmp} e2e_init
qemu_init
D=$E2E_WORK
FORMATS=(raw qcow2 hlfs)

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
remove() {
    case $1 in
        raw | qcow2) rm -f "$(image "$1" "$2")" ;;
        hlfs) rm -rf "${D:?}/$2" ;; # the volume's index lives inside it too
    esac
}
# bench FMT NAME ARGS...: one qemu-img bench run; prints "SECONDS WALL",
# the timed part (qemu-img's "Run completed in") and the wall time of the
# whole process (open + run + close, which for hlfs includes the final
# flush and checkpoint).
bench() {
    local f=$1 name=$2 out t0 t1 secs
    shift 2
    # Same start for every run: (1) write back what earlier runs left
    # dirty, or the kernel throttles this run's writes for them; (2) on a
    # VM that hands freed memory back to the host (free page reporting, as
    # here) the first touch of a page is slow, so whichever run came first
    # after a big free would pay for it: write and delete IMAGE_MIB of page
    # cache just before, so every run writes into pages the host backs.
    # (Neither is timed.)
    sync
    dd if=/dev/zero of="$D/prewarm" bs=1M count="$IMAGE_MIB" status=none
    rm -f "$D/prewarm"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2046
    out=$(qemu-img bench $(fmt_args "$f") -t "$CACHE" -d "$DEPTH" "$@" "$(image "$f" "$name")" 2>&1) ||
        fail "qemu-img bench $f $* failed:
$out"
    t1=$(date +%s.%N)
    secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
    [ -n "$secs" ] || fail "no 'Run completed' line from qemu-img bench:
$out"
    echo "$secs $(awk "BEGIN { printf \"%.3f\", $t1 - $t0 }")"
}

declare -A T W # T[workload,fmt] = "s1 s2 ...", W = wall times
STEP=$((STEP_BLOCKS * 4096))
log "dir $D ($(findmnt -no FSTYPE -T "$D")), ${IMAGE_MIB} MiB images, $RUNS rounds, depth $DEPTH, cache $CACHE"
log "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# Filled images for the read runs: every block written once (1 MiB writes).
for f in "${FORMATS[@]}"; do
    create "$f" fill
    bench "$f" fill -w -s 1M -S 1M -c $((IMAGE_MIB)) --pattern=0x3c >/dev/null
done

for r in $(seq "$RUNS"); do
    # Each round runs the three formats back to back, so all three see the
    # same machine conditions; the ratios are steadier than the absolutes.
    for f in "${FORMATS[@]}"; do
        create "$f" w
        read -r s w < <(bench "$f" w -w -s 4k -S "$STEP" -c "$RAND_COUNT" --pattern=0xa5)
        T[randwrite,$f]+="$s "; W[randwrite,$f]+="$w "
        remove "$f" w
    done
    for f in "${FORMATS[@]}"; do
        create "$f" w
        read -r s w < <(bench "$f" w -w -s 4k -S "$STEP" -c "$FLUSH_COUNT" \
            --flush-interval="$FLUSH_EVERY" --pattern=0xa5)
        T[randwrite_flush,$f]+="$s "; W[randwrite_flush,$f]+="$w "
        remove "$f" w
    done
    for f in "${FORMATS[@]}"; do
        read -r s w < <(bench "$f" fill -s 4k -S "$STEP" -o $(((r * 7919 % BLOCKS) * 4096)) -c "$RAND_COUNT")
        T[randread,$f]+="$s "; W[randread,$f]+="$w "
    done
    for f in "${FORMATS[@]}"; do
        create "$f" s
        read -r s w < <(bench "$f" s -w -s 1M -S 1M -c "$SEQ_COUNT" --pattern=0x5a)
        T[seqwrite,$f]+="$s "; W[seqwrite,$f]+="$w "
        remove "$f" s
    done
    for f in "${FORMATS[@]}"; do
        create "$f" s
        read -r s w < <(bench "$f" s -w -s 1M -S 1M -c "$SEQ_COUNT" \
            --flush-interval="$FLUSH_EVERY" --pattern=0x5a)
        T[seqwrite_flush,$f]+="$s "; W[seqwrite_flush,$f]+="$w "
        remove "$f" s
    done
    log "round $r/$RUNS done (load $(cut -d' ' -f1 /proc/loadavg))"
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$RAND_COUNT" "$SEQ_COUNT" "$LOAD_START" "$LOAD_END" "$FLUSH_COUNT" "$FLUSH_EVERY" \
    "$(for k in "${!T[@]}"; do printf '%s=%s|%s\n' "$k" "${T[$k]}" "${W[$k]}"; done)" <<'EOF'
import statistics, sys
rand_n, seq_n = int(sys.argv[1]), int(sys.argv[2])
load0, load1 = sys.argv[3], sys.argv[4]
flush_n, flush_every = int(sys.argv[5]), sys.argv[6]
T, W = {}, {}
for line in sys.argv[7].splitlines():
    key, vals = line.split("=", 1)
    t, w = vals.split("|")
    wl, f = key.split(",")
    T[wl, f] = [float(x) for x in t.split()]
    W[wl, f] = [float(x) for x in w.split()]
work = [("randwrite", "4 KiB scattered write", rand_n, "IOPS", 1),
        ("randwrite_flush", f"4 KiB scattered write, flush every {flush_every}", flush_n, "IOPS", 1),
        ("randread", "4 KiB scattered read", rand_n, "IOPS", 1),
        ("seqwrite", "1 MiB sequential write", seq_n, "MiB/s", 1),
        ("seqwrite_flush", f"1 MiB sequential write, flush every {flush_every}", seq_n, "MiB/s", 1)]
thr = {}
print(f"\nload average: {load0} at start, {load1} at end")
print("\nper-run timed seconds (qemu-img 'Run completed'), then wall seconds incl. open/close:")
for wl, name, n, unit, _ in work:
    for f in ("raw", "qcow2", "hlfs"):
        print(f"  {wl:15} {f:5} run: {' '.join(f'{x:.3f}' for x in T[wl, f])}"
              f"   wall: {' '.join(f'{x:.2f}' for x in W[wl, f])}")
print()
print(f"| workload | raw | qcow2 | hlfs | hlfs/raw | hlfs/qcow2 |")
print(f"|---|---|---|---|---|---|")
for wl, name, n, unit, _ in work:
    row = []
    for f in ("raw", "qcow2", "hlfs"):
        m = statistics.median(T[wl, f])
        thr[wl, f] = n / m
        row.append(f"{n / m:,.0f} {unit}")
    r1 = thr[wl, "hlfs"] / thr[wl, "raw"]
    r2 = thr[wl, "hlfs"] / thr[wl, "qcow2"]
    print(f"| {name} | {' | '.join(row)} | {r1:.2f} | {r2:.2f} |")
print()
print("| workload | raw | qcow2 | hlfs |   (median wall seconds per qemu-img run, incl. open and close)")
print("|---|---|---|---|")
for wl, name, n, unit, _ in work:
    print(f"| {name} | " + " | ".join(f"{statistics.median(W[wl, f]):.2f} s" for f in ("raw", "qcow2", "hlfs")) + " |")
goals = [("4 KiB random write >= 2x qcow2", "randwrite", "qcow2", 2.0),
         ("4 KiB random write >= 0.8x raw", "randwrite", "raw", 0.8),
         ("4 KiB random read >= 0.9x qcow2", "randread", "qcow2", 0.9),
         ("1 MiB sequential write >= 0.8x raw", "seqwrite", "raw", 0.8)]
print("\ngoals (issue 3):")
for text, wl, other, want in goals:
    got = thr[wl, "hlfs"] / thr[wl, other]
    extra = ""
    if wl in ("randwrite", "seqwrite"):
        g2 = thr[wl + "_flush", "hlfs"] / thr[wl + "_flush", other]
        extra = f"   (with a flush every {flush_every} writes: {g2:.2f}x, {'met' if g2 >= want else 'missed'})"
    print(f"  {'MET   ' if got >= want else 'MISSED'} {text}: {got:.2f}x{extra}")
EOF
