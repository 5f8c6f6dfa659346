#!/usr/bin/env bash
# Guest discard reaches the log and the cleaner gives the space back:
# 48 MiB written through qemu-io, a snapshot, 32 MiB of it then discarded
# through QEMU (discard=unmap, the path a guest's TRIM takes) and the rest
# overwritten. The snapshot still pins the old blocks, so `hlfs gc` frees
# little; after `hlfs snapshot delete` it frees most of the log. Reads of
# the head (zeros where discarded, the overwrite elsewhere) are checked
# through qemu-io after each step, and `hlfs info` shows log against live
# bytes.
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
e2e_init
qemu_init
HLFS=${CARGO_TARGET_DIR:-$HLFS_ROOT/target}/release/hlfs
[ -x "$HLFS" ] || fail "no hlfs CLI at $HLFS (cargo build --release)"

T=$E2E_WORK
U=local://$T/vol
V=hlfs:$U
MIB=$((1 << 20))
must "create" qemu-img create -f hlfs "$V" 64M >/dev/null
qio "write 48 MiB" "$V" -- "write -P 0x11 0 $((48 * MIB))" flush
must "snapshot" "$HLFS" snapshot create "$U" s1
# The discard goes through the block layer as a guest's would (discard=unmap).
qio "discard 32 MiB" --image-opts "driver=hlfs,uri=$U,discard=unmap" -- \
    "discard 0 $((32 * MIB))" "write -P 0x22 $((32 * MIB)) $((16 * MIB))" flush
HEAD=("read -P 0 0 $((32 * MIB))" "read -P 0x22 $((32 * MIB)) $((16 * MIB))" "read -P 0 $((48 * MIB)) $((16 * MIB))")
qio "head after discard" -r "$V" -- "${HEAD[@]}"
qio "snapshot keeps its blocks" -r "$V%s1" -- "read -P 0x11 0 $((48 * MIB))"

# Bytes of segments and checkpoints, as `hlfs info` reports them.
log_bytes() { "$HLFS" info "$U" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["allocated_bytes"])'; }
live() { "$HLFS" info "$U" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["live_bytes"])'; }
[ "$(live)" -eq $((64 * MIB)) ] || fail "live bytes with the snapshot: $(live), expected 64 MiB (48 snapshot + 16 head)"

gc_json() { "$HLFS" gc "$U" --grace 0 --output json; }
before=$(log_bytes)
gc_json >/dev/null
with_snap=$(log_bytes)
log "log with the snapshot: $((before / MIB)) MiB before gc, $((with_snap / MIB)) MiB after"
qio "head after gc" -r "$V" -- "${HEAD[@]}"
qio "snapshot after gc" -r "$V%s1" -- "read -P 0x11 0 $((48 * MIB))"

must "snapshot delete" "$HLFS" snapshot delete "$U" s1
[ "$(live)" -eq $((16 * MIB)) ] || fail "live bytes after the snapshot went: $(live), expected 16 MiB"
gc_json >"$T/gc.json" || fail "gc failed"
after=$(log_bytes)
log "log after deleting the snapshot and gc: $((after / MIB)) MiB (live 16 MiB)"
[ "$after" -lt $((24 * MIB)) ] || fail "the log still holds $after bytes for 16 MiB live: $(cat "$T/gc.json")"
qio "head after the last gc" -r "$V" -- "${HEAD[@]}"
out=$("$HLFS" fsck "$U") || fail "fsck: $out"
log "ok: discard through QEMU + snapshot delete + gc brought the log from $((before / MIB)) MiB to $((after / MIB)) MiB"
log "passed"
