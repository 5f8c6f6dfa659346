#!/usr/bin/env bash
# Full disk, through the patched QEMU: a volume on a small tmpfs is written
# by qemu-io in 1 MiB chunks with a flush after every second chunk until the
# filesystem is full. The failing write or flush reports "No space left on
# device", and so does the next write while the disk stays full; every
# chunk acknowledged by a completed flush reads back meanwhile (a read-only
# open). Once a filler file is deleted the same qemu-io session retries the
# failed chunk, flushes, reads back every chunk it acknowledged (flushed or
# not) and takes new writes; reopened, the volume holds all of it and
# passes hlfs fsck. (tests/e2e/guest_enospc.sh does the same under a
# running guest with werror=stop.)
# Needs root (mount); exit 77 otherwise.
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
[ "$(id -u)" = 0 ] || skip "needs root to mount a small tmpfs"
e2e_init
qemu_init

T=$E2E_WORK
MNT=$T/mnt
small_tmpfs "$MNT" 40m

V=hlfs:local://$MNT/vol
U=local://$MNT/vol
MiB=1048576
CHUNKS=64 # 64 MiB of writes: more than the filesystem holds

must "create" qemu-img create -f hlfs "$V" 128M >/dev/null
# Space to give back later.
dd if=/dev/zero of="$MNT/filler" bs=1M count=8 status=none

# qemu-io reading commands from a fifo; it prints a prompt after each
# command has returned.
mkfifo "$T/w.in"
qemu-io "$V" <"$T/w.in" >"$T/w.out" 2>&1 &
WPID=$!
E2E_PIDS+=("$WPID")
exec {WFD}>"$T/w.in"
prompts() { { grep -o 'qemu-io> ' "$T/w.out" 2>/dev/null || true; } | wc -l; }
wait_prompts() {
    local i
    for ((i = 0; i < 600; i++)); do
        [ "$(prompts)" -ge "$1" ] && return 0
        kill -0 "$WPID" 2>/dev/null || fail "qemu-io died:
$(cat "$T/w.out")"
        sleep 0.05
    done
    fail "qemu-io: no prompt $1 within 30 s:
$(tail -n 20 "$T/w.out")"
}
N=1
wait_prompts 1
# cmd CMD: sends one command, waits for it, sets OUT to what it printed.
cmd() {
    local before
    before=$(wc -c <"$T/w.out")
    printf '%s\n' "$1" >&"$WFD"
    N=$((N + 1))
    wait_prompts $N
    OUT=$(tail -c +$((before + 1)) "$T/w.out")
}

flushed=0  # chunks [0, flushed) are acknowledged by a completed flush
acked=0    # chunks [0, acked) were acknowledged (the write returned)
first_err=""
for ((i = 0; i < CHUNKS; i++)); do
    cmd "write -P $((i + 1)) $((i * MiB)) $MiB"
    if grep -q 'failed' <<<"$OUT"; then
        first_err="write of chunk $i: $(grep -m1 failed <<<"$OUT")"
        break
    fi
    acked=$((i + 1))
    if [ $((i % 2)) = 1 ]; then
        cmd "flush"
        if grep -q 'failed' <<<"$OUT"; then
            first_err="flush after chunk $i: $(grep -m1 failed <<<"$OUT")"
            break
        fi
        flushed=$acked
    fi
done
[ -n "$first_err" ] || fail "wrote $CHUNKS MiB to a 40 MiB filesystem without an error"
grep -q 'No space left on device' <<<"$first_err" ||
    fail "the first failure is not ENOSPC: $first_err"
log "ok: $first_err (after $acked chunks acknowledged, $flushed flushed)"
[ "$flushed" -ge 8 ] || fail "only $flushed chunks flushed before ENOSPC: the test proves little"

# With the disk still full, the same session keeps failing with ENOSPC
# (not with a broken writer: a write + flush of the failed chunk again), and a read-only opener meanwhile (-U: the
# writer holds the lock) reads every flushed chunk back.
# The failed chunk again (a small write could fit: the writer cut the
# failed write's partial bytes back off the file).
cmd "write -P $((acked + 1)) $((acked * MiB)) $MiB"
w1=$OUT
cmd "flush"
grep -q 'No space left on device' <<<"$w1$OUT" ||
    fail "a write and flush with the disk still full: expected ENOSPC again, got: $w1 $OUT"
log "ok: with the disk still full a write + flush fails with ENOSPC again: $(grep -m1 failed <<<"$w1$OUT")"
checks=()
for ((i = 0; i < flushed; i++)); do checks+=("read -P $((i + 1)) $((i * MiB)) $MiB"); done
qio "flushed chunks read back with the disk full (read-only opener)" -r -U "$V" -- "${checks[@]}"
log "ok: all $flushed flushed chunks read back through a read-only open with the disk still full"

# --- free space: the same open volume goes on ------------------------------------
rm -f "$MNT/filler"
log "freed 8 MiB: $(df -h --output=avail "$MNT" | tail -n1 | tr -d ' ') available"
# Retry what failed (as QEMU does on cont after werror=stop), then flush.
cmd "write -P $((acked + 1)) $((acked * MiB)) $MiB"
grep -q 'failed' <<<"$OUT" && fail "retrying chunk $acked after freeing space failed: $OUT"
cmd "flush"
grep -q 'failed' <<<"$OUT" && fail "flush after freeing space failed: $OUT"
acked=$((acked + 1))
# Every acknowledged chunk, flushed before the failure or not, reads back
# whole in the same session: nothing acknowledged was dropped.
for ((i = 0; i < acked; i++)); do
    cmd "read -P $((i + 1)) $((i * MiB)) $MiB"
    grep -Eq 'failed|Pattern verification' <<<"$OUT" && fail "chunk $i after freeing space: $OUT"
done
for ((i = 0; i < 4; i++)); do
    cmd "write -P $((0x80 + i)) $(((64 + i) * MiB)) $MiB"
    grep -q 'failed' <<<"$OUT" && fail "new write $i after freeing space failed: $OUT"
done
cmd "flush"
grep -q 'failed' <<<"$OUT" && fail "the last flush failed: $OUT"
log "ok: the same session retried the failed chunk, flushed, read all $acked chunks back and took new writes"
printf 'quit\n' >&"$WFD"
exec {WFD}>&-
rc=0
wait "$WPID" || rc=$?
# qemu-io exits 1 when any of its commands failed (the ENOSPC ones did).
[ $rc -le 1 ] || fail "qemu-io exited $rc: $(tail -n 5 "$T/w.out")"

# Reopened, the volume holds all of it.
checks=()
for ((i = 0; i < acked; i++)); do checks+=("read -P $((i + 1)) $((i * MiB)) $MiB"); done
qio "every chunk and the new writes read back after reopening" "$V" -- "${checks[@]}" \
    "read -P 128 $((64 * MiB)) $MiB" "read -P 131 $((67 * MiB)) $MiB"
qio_must_mismatch "the check can fail" "$V" -- "read -P 99 0 $MiB"
log "ok: after reopening, all $acked chunks and the new writes read back"
must "fsck" "$HLFS_CLI" fsck "$U" >/dev/null
log "ok: hlfs fsck passes"
log "passed"
