#!/usr/bin/env bash
# Full disk, through the patched QEMU: a volume on a small tmpfs is written
# by qemu-io in 1 MiB chunks with a flush after every second chunk until the
# filesystem is full. The failing write or flush reports "No space left on
# device"; every chunk acknowledged by a completed flush reads back (with
# the disk still full, through a read-only open); once a filler file is
# deleted the volume opens read-write, still holds every flushed chunk
# (each unflushed chunk reads as its pattern or as zeros, block by block),
# takes new writes and flushes, and passes hlfs fsck.
# Needs root (mount); exit 77 otherwise.
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
[ "$(id -u)" = 0 ] || skip "needs root to mount a small tmpfs"
e2e_init
qemu_init

T=$E2E_WORK
MNT=$T/mnt
mkdir "$MNT"
mount -t tmpfs -o size=40m hlfs-enospc "$MNT" || skip "cannot mount a tmpfs on $MNT"
enospc_cleanup() {
    local pid
    for pid in "${E2E_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
    e2e_cleanup
}
trap enospc_cleanup EXIT

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

# What the writer does after the failure (reported, not asserted: the
# engine keeps its writer failed until the volume is reopened).
cmd "write -P 0xee $((100 * MiB)) 4096"
log "a write after the failure: $(grep -m1 -E 'failed|wrote' <<<"$OUT")"
cmd "flush"
log "a flush after the failure: $(grep -m1 failed <<<"$OUT" || echo ok)"
printf 'quit\n' >&"$WFD"
exec {WFD}>&-
rc=0
wait "$WPID" || rc=$?
log "qemu-io quit with the disk full: exit $rc$(grep -E 'error|fail' "$T/w.out" | grep -v '^write failed\|^flush failed' | tail -n1 | sed 's/^/, /')"

# Every flushed chunk reads back while the disk is still full (a read-only
# open writes nothing).
checks=()
for ((i = 0; i < flushed; i++)); do checks+=("read -P $((i + 1)) $((i * MiB)) $MiB"); done
qio "flushed chunks read back with the disk full" -r "$V" -- "${checks[@]}"
log "ok: all $flushed flushed chunks read back with the disk still full"
out=$(qemu-io -c 'write -P 0xef 0 4096' "$V" 2>&1) && rc=0 || rc=$?
log "read-write open + write with the disk still full: exit $rc $(head -n1 <<<"$out")"

# --- free space: the volume opens and continues ----------------------------------
rm -f "$MNT/filler"
log "freed 8 MiB: $(df -h --output=avail "$MNT" | tail -n1 | tr -d ' ') available"
qio "flushed chunks read back after freeing space (read-write open)" "$V" -- "${checks[@]}"
# Unflushed but acknowledged chunks: each 4 KiB block holds its pattern or zeros.
rm -f "$T/export.raw"
must "export" "$HLFS_CLI" export "$U" "$T/export.raw" >/dev/null
python3 - "$T/export.raw" "$flushed" "$acked" "$MiB" <<'EOF' || fail "unflushed chunks hold something else than their pattern or zeros"
import sys
path, flushed, acked, mib = sys.argv[1], *map(int, sys.argv[2:])
data = open(path, "rb").read()
landed = 0
for i in range(flushed, acked + 1):  # acked + 1: the write that failed
    for b in range(i * mib, (i + 1) * mib, 4096):
        blk = data[b:b + 4096]
        if blk == bytes([i + 1]) * 4096:
            landed += 1
        elif blk != bytes(4096):
            sys.exit(f"chunk {i}, block at {b}: neither pattern {i + 1} nor zeros")
print(f"[qemu_enospc] unflushed chunks {flushed}..{acked}: {landed} blocks landed, the rest zeros", file=sys.stderr)
EOF
# The volume continues: new writes and flushes succeed and read back.
new=()
for ((i = 0; i < 4; i++)); do
    new+=("write -P $((0x80 + i)) $(((64 + i) * MiB)) $MiB")
done
qio "write and flush after freeing space" "$V" -- "${new[@]}" 'flush'
qio "flushed chunks and new writes read back" -r "$V" -- "${checks[@]}" \
    "read -P 128 $((64 * MiB)) $MiB" "read -P 131 $((67 * MiB)) $MiB"
log "ok: after freeing space the volume opens, keeps its flushed data and takes new writes"
must "fsck" "$HLFS_CLI" fsck "$U" >/dev/null
log "ok: hlfs fsck passes"
log "passed"
