#!/usr/bin/env bash
# Crash loop with fio running inside the test guest (tests/crash/guest_fio_crash.py):
# the guest's /dev/vdb is an hlfs volume; each boot verifies, with fio's
# verify_only, the writes the previous boot's fio had completed (O_DIRECT|O_SYNC,
# counted from fio's own status lines) and starts new ones, and QEMU is
# killed with SIGKILL at a random moment. Every boot must open the volume
# and every acknowledged write must read back; ends with hlfs fsck and a
# tamper check (the verification must see a volume zeroed behind its back).
#
# Short mode (the test suite): 6 crash points, about 40 s under TCG.
# Soak mode: HLFS_GUEST_CRASH_POINTS=1000 HLFS_GUEST_CRASH_PARALLEL=2 bash tests/e2e/guest_fio_crash.sh
# HLFS_CRASH_SEED=N repeats a run's random choices (kill timing still varies).
# Prints: crash points: N, writes checked: N, lost: N, unopenable: N
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
e2e_init
qemu_init

POINTS=${HLFS_GUEST_CRASH_POINTS:-6}
PAR=${HLFS_GUEST_CRASH_PARALLEL:-1}
[[ $POINTS =~ ^[1-9][0-9]*$ ]] || fail "HLFS_GUEST_CRASH_POINTS must be a positive number, not '$POINTS'"
[[ $PAR =~ ^[1-9][0-9]*$ ]] || fail "HLFS_GUEST_CRASH_PARALLEL must be a positive number, not '$PAR'"
crash_seed_args
command -v python3 >/dev/null || skip "python3 is not installed"
[ -x "$QEMU_BIN/qemu-system-x86_64" ] || fail "no qemu-system-x86_64 in $QEMU_BIN"

rc=0
python3 "$HLFS_ROOT/tests/crash/guest_fio_crash.py" --qemu-bin "$QEMU_BIN" --cli "$HLFS_CLI" \
    --build-guest "$HLFS_ROOT/tests/guest/build-guest.sh" --accel "$(guest_accel)" \
    --work "$E2E_WORK/loop" --points "$POINTS" --parallel "$PAR" "${SEED_ARGS[@]}" \
    --progress $((POINTS >= 100 ? 25 : POINTS)) >"$E2E_WORK/counts" || rc=$?
counts=$(cat "$E2E_WORK/counts")
echo "$counts"
[ $rc = 0 ] || fail "guest fio crash loop failed (see above): $counts"
# At least POINTS crash points: after the last one the loop may need more
# rounds (each of which can be killed too) until a write job got going
# whose writes the final boot can check.
got=$(sed -nE 's/^crash points: ([0-9]+), writes checked: [1-9][0-9]*, lost: 0, unopenable: 0$/\1/p' <<<"$counts")
[ -n "$got" ] && [ "$got" -ge "$POINTS" ] ||
    fail "unexpected counts (want >= $POINTS crash points, some writes checked, 0 lost, 0 unopenable): $counts"
log "ok: $counts"
log "passed"
