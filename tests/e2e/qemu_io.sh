#!/usr/bin/env bash
# Data written through qemu-io and the hlfs block driver reads back exactly,
# at offsets and sizes that are 512-aligned but not 4K-aligned; a snapshot
# keeps the old bytes while the head shows the overwrites (both checked
# byte for byte with `read -P`); a clone starts equal to its base snapshot,
# diverges on its own writes and leaves the base snapshot and the base head
# untouched; discard and write-zeroes (aligned or not) read back as zeros,
# and map reports the fully discarded blocks as zeros; a read-write open of
# VOL%SNAP reverts the head and keeps the old head as snapshot pre-revert-N.
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
e2e_init
qemu_init

T=$E2E_WORK
V=hlfs:local://$T/vol
C=hlfs:local://$T/clone
SIZE=$((256 << 20))
END=$((SIZE - 4608)) # a write that ends 512 bytes before the end of the volume

must "create" qemu-img create -f hlfs "$V" "$SIZE" >/dev/null

# --- unaligned writes -------------------------------------------------------
# 0xab: [512, 2048)             inside block 0
# 0xcd: [12800, 82944)          starts mid-block 3, ends mid-block 20
# 0xef: [END, SIZE-512)         two partial blocks at the end of the volume
qio "first writes" "$V" -- \
    'write -P 0xab 512 1536' \
    'write -P 0xcd 12800 70144' \
    "write -P 0xef $END 4096"
# The old contents, as a list of read checks (also used for the snapshot).
OLD=(
    'read -P 0 0 512'
    'read -P 0xab 512 1536'
    'read -P 0 2048 10752'
    'read -P 0xcd 12800 70144'
    'read -P 0 82944 8192'
    "read -P 0 $((END - 512)) 512"
    "read -P 0xef $END 4096"
    "read -P 0 $((SIZE - 512)) 512"
)
qio "read back the first writes (new process)" -r "$V" -- "${OLD[@]}"
# The checks can fail: a wrong pattern must be reported.
qio_must_mismatch "wrong pattern" -r "$V" -- 'read -P 0xcd 12288 1024'

must "snapshot" qemu-img snapshot -c snap1 "$V" >/dev/null

# --- overwrite the head, partly overlapping the old ranges ------------------
# 0x12: [1024, 5120)            over the tail of 0xab and past block 0
# 0x34: [40960, 41472)          one sector in the middle of 0xcd
# 0x56: [81920, 86016)          over the end of 0xcd and past it
qio "overwrites" "$V" -- \
    'write -P 0x12 1024 4096' \
    'write -P 0x34 40960 512' \
    'write -P 0x56 81920 4096'
NEW=(
    'read -P 0 0 512'
    'read -P 0xab 512 512'
    'read -P 0x12 1024 4096'
    'read -P 0 5120 7680'
    'read -P 0xcd 12800 28160'
    'read -P 0x34 40960 512'
    'read -P 0xcd 41472 40448'
    'read -P 0x56 81920 4096'
    'read -P 0 86016 8192'
    "read -P 0xef $END 4096"
)
qio "head shows the overwrites" -r "$V" -- "${NEW[@]}"
qio "snapshot keeps the old data" -r "$V%snap1" -- "${OLD[@]}"
qio "snapshot keeps the old data (-o snapshot= form)" -r \
    --image-opts "driver=hlfs,uri=local://$T/vol,snapshot=snap1" -- "${OLD[@]}"
qio_must_mismatch "snapshot is not the head" -r "$V%snap1" -- 'read -P 0x12 1024 4096'

# --- clone of snap1 -----------------------------------------------------------
must "create clone target" qemu-img create -f hlfs "$C" "$SIZE" >/dev/null
must "clone" qemu-img create -b "$V%snap1" "$C" >/dev/null
qio "clone starts equal to snap1" -r "$C" -- "${OLD[@]}"
qio "clone writes" "$C" -- 'write -P 0x99 0 8192' 'write -P 0x77 13312 512'
qio "clone diverged" -r "$C" -- \
    'read -P 0x99 0 8192' \
    'read -P 0 8192 4608' \
    'read -P 0xcd 12800 512' \
    'read -P 0x77 13312 512' \
    'read -P 0xcd 13824 69120' \
    "read -P 0xef $END 4096"
qio "snap1 unchanged by the clone" -r "$V%snap1" -- "${OLD[@]}"
qio "base head unchanged by the clone" -r "$V" -- "${NEW[@]}"

# --- discard and write-zeroes --------------------------------------------------
# discard [16384, 32768): four whole blocks inside 0xcd
# write -z [13312, 14336): two sectors, not block-aligned
# write -z -u [36864, 40960): one whole block, unmapping
# discard [1536, 2560): sectors straddling 0xab / 0x12 (not block-aligned)
qio "discard and write-zeroes" "$V" -- \
    'discard 16384 16384' \
    'write -z 13312 1024' \
    'write -z -u 36864 4096' \
    'discard 1536 1024'
ZEROED=(
    'read -P 0xab 512 512'
    'read -P 0x12 1024 512'
    'read -P 0 1536 1024'
    'read -P 0x12 2560 2560'
    'read -P 0xcd 12800 512'
    'read -P 0 13312 1024'
    'read -P 0xcd 14336 2048'
    'read -P 0 16384 16384'
    'read -P 0xcd 32768 4096'
    'read -P 0 36864 4096'
    'read -P 0x34 40960 512'
    'read -P 0xcd 41472 40448'
)
qio "zeroed ranges read as zeros" -r "$V" -- "${ZEROED[@]}"
map=$(must "map" qemu-img map --output json "$V")
python3 - "$map" <<'EOF' || fail "map after discard is wrong:
$map"
import json, sys
ext = json.loads(sys.argv[1])
def at(off):
    return next(e for e in ext if e["start"] <= off < e["start"] + e["length"])
# The volume has a snapshot, so the discarded blocks are recorded as zeros
# that hide snap1's data; the driver reports those as ZERO|DATA ("reads as
# zeros, allocated"), which is fine for QEMU: ZERO is what convert, mirror
# and compare act on.
for o in (16384, 20480, 24576, 28672, 36864):
    assert at(o)["zero"], ("discarded block not reported as zeros", o, at(o))
for o in (12288, 32768, 40960):
    assert at(o)["data"], ("written block is not data", o, at(o))
EOF
qio "snap1 unchanged by discard" -r "$V%snap1" -- "${OLD[@]}"
qio "clone unchanged by the base's discard" -r "$C" -- 'read -P 0xcd 16384 16384'

# --- a read-write open of VOL%SNAP reverts the head to SNAP ---------------------
# (what booting from a snapshot does); the replaced head survives as an
# automatic snapshot pre-revert-N.
qio "write through a read-write open of %snap1" "$V%snap1" -- \
    'read -P 0xcd 16384 16384' \
    'write -P 0x21 94208 4096'
qio "head is snap1 plus the new write" -r "$V" -- "${OLD[@]}" 'read -P 0x21 94208 4096'
list=$(must "snapshot list" qemu-img snapshot -l "$V")
pre=$(awk '$2 ~ /^pre-revert-[0-9]+$/ { print $2 }' <<<"$list")
[ "$(wc -w <<<"$pre")" = 1 ] || fail "expected one pre-revert-N snapshot after the revert:
$list"
qio "$pre holds the head from before the revert" -r "$V%$pre" -- "${ZEROED[@]}"
qio "snap1 unchanged by the revert" -r "$V%snap1" -- "${OLD[@]}"

# --- a reopen never changes the image ------------------------------------------
# Reopening a read-only VOL%SNAP node read-write (what a block job asking
# for a writable node does) would revert the volume: refused, nothing
# reverted.
before=$(must "snapshot list" qemu-img snapshot -l "$V")
must_fail "reopen of a read-only %snap node read-write" "cannot make it writable.*revert" \
    qemu-io -r -c 'reopen -w' "$V%snap1"
after=$(must "snapshot list" qemu-img snapshot -l "$V")
[ "$(awk '{print $2}' <<<"$before")" = "$(awk '{print $2}' <<<"$after")" ] ||
    fail "the refused reopen changed the snapshots:
$before
---
$after"
qio "the head is as before the refused reopen" -r "$V" -- "${OLD[@]}" 'read -P 0x21 94208 4096'

log "passed"
