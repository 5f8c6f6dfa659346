#!/usr/bin/env bash
# Live migration between two QEMU processes sharing hlfs volumes
# (tests/vm/migrate.py): 20 migrations back and forth over a unix socket,
# each to a new QEMU started with -incoming, while fio in the guest writes
# and verifies; the write lock always sits with the running QEMU; a
# cancelled migration leaves the source running and locked; a destination
# that cannot take the lock stays paused with an error naming the holder.
# HLFS_MIGRATIONS=N changes the count.
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
e2e_init
qemu_init
command -v python3 >/dev/null || skip "python3 is not installed"
N=${HLFS_MIGRATIONS:-20}
[[ $N =~ ^[1-9][0-9]*$ ]] || fail "HLFS_MIGRATIONS must be a positive number, not '$N'"
rc=0
python3 "$HLFS_ROOT/tests/vm/migrate.py" --qemu-bin "$QEMU_BIN" --cli "$HLFS_CLI" \
    --build-guest "$HLFS_ROOT/tests/guest/build-guest.sh" --accel "$(guest_accel)" \
    --work "$E2E_WORK/migrate" --migrations "$N" >"$E2E_WORK/out" || rc=$?
cat "$E2E_WORK/out"
[ $rc = 0 ] || fail "live migration failed (see above)"
grep -q "^migrate: $N migrations .* 0 verify errors" "$E2E_WORK/out" || fail "no result line"
log "passed"
