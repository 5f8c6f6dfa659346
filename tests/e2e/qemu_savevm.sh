#!/usr/bin/env bash
# savevm/loadvm on a guest whose disk is an hlfs volume (tests/vm/savevm.py):
# a counter in the guest's memory goes on from the saved value after HMP
# loadvm, after the QMP snapshot-load job and in a new QEMU with -loadvm;
# info snapshots and hlfs snapshot list show the VM state's size; deleting
# the snapshot frees it (live bytes) and hlfs gc gives the space back.
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
e2e_init
qemu_init
command -v python3 >/dev/null || skip "python3 is not installed"
rc=0
python3 "$HLFS_ROOT/tests/vm/savevm.py" --qemu-bin "$QEMU_BIN" --cli "$HLFS_CLI" \
    --build-guest "$HLFS_ROOT/tests/guest/build-guest.sh" --accel "$(guest_accel)" \
    --work "$E2E_WORK/savevm" >"$E2E_WORK/out" || rc=$?
cat "$E2E_WORK/out"
[ $rc = 0 ] || fail "savevm/loadvm failed (see above)"
grep -q '^savevm: VM state [1-9][0-9]* bytes' "$E2E_WORK/out" || fail "no result line"
log "passed"
