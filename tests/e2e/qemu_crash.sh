#!/usr/bin/env bash
# Crash loop through the patched QEMU (tests/crash/crashloop.py): qemu-io
# writes patterns with a ledger of what completed flushes covered and is
# killed with SIGKILL at random moments; snapshot create/revert/delete and
# clone commands (hlfs and qemu-img) are killed at random moments too. After
# every kill the volume must open, every flushed write must read back (or a
# later write to the same place), and an interrupted operation must have
# happened whole or not at all. Ends with hlfs fsck and a check that the
# checker notices a sector changed behind its back.
#
# Short mode (the test suite): 25 crash points, about half a minute.
# Soak mode: HLFS_CRASH_POINTS=1000 bash tests/e2e/qemu_crash.sh
# HLFS_CRASH_SEED=N repeats a run's random choices (kill timing still varies).
# HLFS_CRASH_CACHE=none (or writeback) runs the writing qemu-io with that
# -t only; by default the loop runs twice, with writeback and with none
# (O_DIRECT, page-aligned batch records).
# Prints: crash points: N, writes checked: N, lost: N, unopenable: N
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
e2e_init
qemu_init

POINTS=${HLFS_CRASH_POINTS:-25}
[[ $POINTS =~ ^[1-9][0-9]*$ ]] || fail "HLFS_CRASH_POINTS must be a positive number, not '$POINTS'"
crash_seed_args
command -v python3 >/dev/null || skip "python3 is not installed"

for cache in ${HLFS_CRASH_CACHE:-writeback none}; do
    rc=0
    python3 "$HLFS_ROOT/tests/crash/crashloop.py" --qemu-bin "$QEMU_BIN" --cli "$HLFS_CLI" \
        --work "$E2E_WORK/loop-$cache" --points "$POINTS" "${SEED_ARGS[@]}" --cache "$cache" \
        --progress $((POINTS >= 200 ? 50 : POINTS)) \
        ${HLFS_KEEP_WORK:+--keep-failed "$E2E_WORK/failed-volume-$cache"} >"$E2E_WORK/counts" || rc=$?
    counts=$(cat "$E2E_WORK/counts")
    echo "cache=$cache: $counts"
    [ $rc = 0 ] || fail "crash loop (cache=$cache) failed (see above): $counts"
    grep -Eq "^crash points: $POINTS, writes checked: [1-9][0-9]*, lost: 0, unopenable: 0$" <<<"$counts" ||
        fail "unexpected counts (cache=$cache): $counts"
    log "ok (cache=$cache): $counts"
done
log "passed"
