#!/usr/bin/env bash
# hlfs diff and export-diff at scale (issue 15), in one run:
#  - `hlfs diff VOL%a VOL%b` on a 4 GiB volume whose 1,048,576 blocks are all
#    mapped, with 1% of them (10,486 scattered 4 KiB blocks) written between
#    snapshots a and b; and the same 10,486 changed blocks on a 64 MiB volume,
#    to show that the time follows the changes and not the volume;
#  - throughput of `hlfs export-diff VOL%b -` (a full diff: all 4 GiB of data)
#    against `hlfs export VOL%b -` (the raw image), both to /dev/null, and the
#    time of the incremental `export-diff VOL%b - --from a` against that
#    export.
# The volumes are filled and changed through qemu-img bench (1 MiB
# sequential writes, then 4 KiB writes at a stride of 65521 blocks, a
# permutation, so no block is written twice). Each measurement runs RUNS
# times; the medians and their ratios are printed. A benchmark, not a test:
# it fails only if a tool fails.
#
# Usage: bench/diff-bench.sh            (after cargo build --release)
# Env:   RUNS=5            rounds; medians over these
#        BIG_MIB=4096      size of the big volume (a power of two)
#        SMALL_MIB=64      size of the small one
#        CHANGED=10486     4 KiB blocks written between a and b (1% of 4 GiB)
#        CACHE=warm        warm: the volumes stay in the page cache (the CPU
#                          path); cold: `echo 3 > drop_caches` before each
#                          export (needs root; disturbs other users of the host)
#        HLFS_BENCH_DIR=/tmp   where the volumes go (needs BIG_MIB + SMALL_MIB + ~5%)
#        HLFS_QEMU_BIN=DIR     QEMU binaries to use with this checkout's
#                          libhlfs.so (LD_LIBRARY_PATH) instead of qemu-patch/build.sh
E2E_NAME=diff-bench
# shellcheck source=../tests/lib/qemu.sh
. "$(dirname "$0")/../tests/lib/qemu.sh"

RUNS=${RUNS:-5}
BIG_MIB=${BIG_MIB:-4096}
SMALL_MIB=${SMALL_MIB:-64}
CHANGED=${CHANGED:-10486}
CACHE=${CACHE:-warm}
STEP=$((65521 * 4096)) # a prime number of blocks: a permutation of a power-of-two volume
[ "$CHANGED" -le $((SMALL_MIB * 256)) ] || fail "CHANGED must fit the small volume ($((SMALL_MIB * 256)) blocks)"
case $CACHE in
    warm) ;;
    cold) [ -w /proc/sys/vm/drop_caches ] || fail "CACHE=cold needs root (drop_caches)" ;;
    *) fail "CACHE must be warm or cold" ;;
esac

TMPDIR=${HLFS_BENCH_DIR:-/tmp} e2e_init
if [ -n "${HLFS_QEMU_BIN:-}" ]; then
    qemu_use_bin "$HLFS_QEMU_BIN"
else
    qemu_init
fi
D=$E2E_WORK
H=$HLFS_CLI

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
drop() {
    if [ "$CACHE" = cold ]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
    fi
}

# prepare NAME MIB: a volume of MIB MiB, every block written, snapshot a,
# CHANGED scattered blocks written, snapshot b.
prepare() {
    local u=local://$D/$1 t=$(now) out
    must "create $1" "$H" create "$u" "${2}M" >/dev/null
    out=$(qemu-img bench -t none -d 32 -w -s 1M -S 1M -c "$2" --pattern=0x3c "hlfs:$u" 2>&1) ||
        fail "filling $1: $out"
    must "snapshot a" "$H" snapshot create "$u" a >/dev/null
    out=$(qemu-img bench -t writeback -d 32 -w -s 4k -S "$STEP" -c "$CHANGED" --pattern=0x5a "hlfs:$u" 2>&1) ||
        fail "changing $1: $out"
    must "snapshot b" "$H" snapshot create "$u" b >/dev/null
    log "$1: $2 MiB, every block written, $CHANGED blocks changed between a and b ($(awk -v a="$t" -v b="$(now)" 'BEGIN {printf "%.0f", b - a}') s)"
}
prepare big "$BIG_MIB"
prepare small "$SMALL_MIB"
BIG=local://$D/big
SMALL=local://$D/small

# The diff is what was written.
n=$("$H" diff "$BIG%a" "$BIG%b" --output json | python3 -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin)) // 4096)')
[ "$n" = "$CHANGED" ] || fail "hlfs diff lists $n changed blocks, $CHANGED were written"

declare -A T C
timeit() { # timeit KEY CMD... (stdout to /dev/null): wall time into T, CPU time (user + sys) into C
    local k=$1 out rc=0
    shift
    out=$( { TIMEFORMAT='%R %U %S'; time "$@" >/dev/null 2>"$D/err"; } 2>&1) || rc=$?
    [ $rc = 0 ] || fail "$* failed: $(cat "$D/err")"
    read -r wall user sys <<<"$out"
    T[$k]+="$wall "
    C[$k]+="$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.3f", u + s}') "
}
for ((r = 1; r <= RUNS; r++)); do
    timeit diff_big "$H" diff "$BIG%a" "$BIG%b" --output json
    timeit diff_small "$H" diff "$SMALL%a" "$SMALL%b" --output json
    drop
    timeit export "$H" export "$BIG%b" -
    drop
    timeit full "$H" export-diff "$BIG%b" -
    drop
    timeit inc "$H" export-diff "$BIG%b" - --from a
    log "round $r/$RUNS done"
done

med() { printf '%s\n' ${T[$1]} | median; }
cpu() { printf '%s\n' ${C[$1]} | median; }
mibs() { awk -v s="$(med "$1")" -v m="$BIG_MIB" 'BEGIN {printf "%.0f", m / s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo
echo "diff-bench: $RUNS rounds, medians; page cache $CACHE; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-62s %10s %10s\n' "measurement" "median" "CPU time"
printf '%-62s %9.3fs %9.3fs\n' "hlfs diff, $BIG_MIB MiB volume (all mapped), $CHANGED blocks changed" "$(med diff_big)" "$(cpu diff_big)"
printf '%-62s %9.3fs %9.3fs\n' "hlfs diff, $SMALL_MIB MiB volume (all mapped), $CHANGED blocks changed" "$(med diff_small)" "$(cpu diff_small)"
printf '%-62s %9sx %9sx\n' "  big / small (1.0: the volume's size does not matter)" "$(ratio "$(med diff_big)" "$(med diff_small)")" "$(ratio "$(cpu diff_big)" "$(cpu diff_small)")"
printf '%-62s %6s MiB/s %9.3fs\n' "hlfs export VOL%b - (raw image, $BIG_MIB MiB)" "$(mibs export)" "$(cpu export)"
printf '%-62s %6s MiB/s %9.3fs\n' "hlfs export-diff VOL%b - (full diff, $BIG_MIB MiB of data)" "$(mibs full)" "$(cpu full)"
printf '%-62s %9sx %9sx\n' "  export-diff / export throughput (CPU: export / export-diff)" "$(ratio "$(med export)" "$(med full)")" "$(ratio "$(cpu export)" "$(cpu full)")"
printf '%-62s %9.3fs %9.3fs\n' "hlfs export-diff VOL%b - --from a ($CHANGED blocks)" "$(med inc)" "$(cpu inc)"
printf '%-62s %9sx\n' "  time of the incremental export-diff / the raw export" "$(ratio "$(med inc)" "$(med export)")"
echo "per-run times (s), wall / CPU:"
for k in diff_big diff_small export full inc; do
    echo "  $k: ${T[$k]}/ ${C[$k]}"
done
