#!/usr/bin/env bash
# Backups between snapshots of a volume that a running guest keeps writing
# (issue 15, docs/backups.md): the test guest's /dev/vdb is an hlfs volume,
# and fio in the guest writes random 4 KiB blocks to it (O_DIRECT, rate
# limited) for the whole test. Meanwhile, six times: a snapshot is taken
# through QEMU (QMP blockdev-snapshot-internal-sync: the hlfs tools cannot,
# QEMU holds the write lock), `hlfs diff` lists what changed since the last
# one, and `hlfs export-diff` (read-only, while the guest writes) carries it
# to a backup volume: the first as a full diff through a file, the others
# as `export-diff - | tee | import-diff -` pipes. Checked: every snapshot of
# the backup reads byte for byte as the source's (hlfs export, cmp); each
# diff is the data `hlfs diff` lists plus at most 32 bytes per record and a
# header; every round carried changes (the guest kept writing); import-diff
# into the source itself is refused naming QEMU's pid; fsck of both is clean
# once QEMU quits.
#
# HLFS_QEMU_BIN=DIR uses the QEMU binaries in DIR (with this checkout's
# libhlfs.so through LD_LIBRARY_PATH, qemu_use_bin) instead of
# qemu-patch/build.sh, which installs the checkout's library system-wide.
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
e2e_init
if [ -n "${HLFS_QEMU_BIN:-}" ]; then
    qemu_use_bin "$HLFS_QEMU_BIN"
else
    qemu_init
fi
command -v python3 >/dev/null || skip "no python3 for QMP"
t0=$(date +%s)

T=$E2E_WORK
QMP="python3 $HLFS_ROOT/tests/lib/qmp.py $T/qmp.sock"
H=$HLFS_CLI
declare -A G
"$HLFS_ROOT/tests/guest/build-guest.sh" >"$T/build-guest.out" 2>"$T/build-guest.err" ||
    { cat "$T/build-guest.err" >&2; fail "tests/guest/build-guest.sh failed"; }
while IFS='=' read -r k v; do
    if [ -n "$v" ]; then G[$k]=$v; fi
done <"$T/build-guest.out"
cp --sparse=always "${G[DISK]}" "$T/root.raw"

SRC=local://$T/src
DST=local://$T/backup
must "create the source" "$H" create "$SRC" 64M >/dev/null
must "create the backup" "$H" create "$DST" 64M >/dev/null

SPEC="name=w,rw=randwrite,bs=4k,size=48M,ioengine=libaio,iodepth=4,direct=1,time_based=1,runtime=900,rate=1m"
# shellcheck disable=SC2046 # word splitting of the accelerator flags is wanted
HLFS_GC=off "$QEMU_BIN/qemu-system-x86_64" -m 256 $(guest_accel_args) -display none -nic none -no-reboot \
    -monitor none -qmp "unix:$T/qmp.sock,server=on,wait=off" -serial "file:$T/console.log" \
    -drive "file=$T/root.raw,if=virtio,format=raw,snapshot=on" \
    -drive "file=hlfs:$SRC,if=virtio,id=data,cache=none" \
    -kernel "${G[VMLINUX]:-${G[KERNEL]}}" -initrd "${G[INITRD]}" \
    -append "${G[CMDLINE]/root=LABEL=hlfs-root/root=/dev/vda2}" \
    -fw_cfg "name=opt/hlfs/cmd,string=fio:${SPEC//,/,,}" </dev/null >"$T/qemu.err" 2>&1 &
QPID=$!
E2E_PIDS+=("$QPID")

# Until fio has written something (the guest boots in a few seconds under
# KVM, ~10 under TCG).
head_bytes() {
    "$H" info "$SRC" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["head_bytes"])'
}
for ((i = 0; ; i++)); do
    kill -0 "$QPID" 2>/dev/null || fail "QEMU exited early:
$(cat "$T/qemu.err")
--- console ---
$(tail -c 3000 "$T/console.log")"
    grep -q 'HLFS-GUEST: error=' "$T/console.log" && fail "the guest reported an error:
$(grep 'HLFS-GUEST' "$T/console.log")"
    [ "$(head_bytes)" -gt $((256 << 10)) ] && break
    [ $i -lt 1200 ] || fail "fio in the guest wrote nothing within 120 s
--- console ---
$(tail -c 3000 "$T/console.log")"
    sleep 0.1
done
log "the guest writes (fio, random 4K at 1 MiB/s); $(($(date +%s) - t0)) s"

snap() {
    $QMP blockdev-snapshot-internal-sync "{\"device\": \"data\", \"name\": \"$1\"}" >/dev/null ||
        fail "QMP blockdev-snapshot-internal-sync $1 failed"
}

# The diff's data bytes and extents, from `hlfs diff --output json`.
listed() { # listed FROM TO -> "DATA_BYTES EXTENTS"
    "$H" diff "$1" "$2" --output json | python3 -c '
import json, sys
l = json.load(sys.stdin)
print(sum(e["length"] for e in l if not e["zero"]), len(l))'
}

snap s0
must "full export-diff while the guest writes" "$H" export-diff "$SRC%s0" "$T/s0.diff" >/dev/null
must "full import-diff" "$H" import-diff "$T/s0.diff" "$DST" >/dev/null
log "s0: full diff of $(stat -c %s "$T/s0.diff") bytes"
must_fail "import-diff into the volume QEMU holds" "open read-write by pid $QPID" \
    "$H" import-diff "$T/s0.diff" "$SRC"

for r in 1 2 3 4 5; do
    sleep 2
    snap "s$r"
    read -r data extents < <(listed "$SRC%s$((r - 1))" "$SRC%s$r")
    [ "$data" -gt 0 ] || fail "round $r: nothing changed between s$((r - 1)) and s$r: is the guest still writing?"
    # A pipe, as over ssh; tee keeps a copy to weigh.
    "$H" export-diff "$SRC%s$r" - --from "s$((r - 1))" 2>"$T/export.err" | tee "$T/s$r.diff" |
        "$H" import-diff - "$DST" >"$T/import.out" 2>&1 ||
        fail "round $r: export-diff | import-diff failed:
$(cat "$T/export.err" "$T/import.out")"
    size=$(stat -c %s "$T/s$r.diff")
    # Each record holds at most 1 MiB of one extent.
    limit=$((data + 32 * (extents + data / (1 << 20) + 2) + 512))
    [ "$size" -ge "$data" ] && [ "$size" -le "$limit" ] ||
        fail "round $r: the diff is $size bytes for $data bytes of data in $extents extents (limit $limit)"
    log "round $r: $data bytes changed in $extents extents, diff $size bytes ($((size - data)) of overhead)"
done

# Bytes the guest has written to the data disk (QEMU's block statistics).
wr_bytes() {
    $QMP query-blockstats | python3 -c '
import json, sys
print(next(b["stats"]["wr_bytes"] for b in json.load(sys.stdin) if b.get("device") == "data"))'
}
# Every snapshot of the backup reads as the source's, the guest still writing.
w0=$(wr_bytes)
for r in 0 1 2 3 4 5; do
    must "export source s$r" "$H" export "$SRC%s$r" "$T/a.raw" >/dev/null
    must "export backup s$r" "$H" export "$DST%s$r" "$T/b.raw" >/dev/null
    cmp -s "$T/a.raw" "$T/b.raw" || fail "snapshot s$r of the backup differs from the source's"
done
must "backup head" "$H" export "$DST" "$T/b.raw" >/dev/null
cmp -s "$T/a.raw" "$T/b.raw" || fail "the backup's head differs from s5"
log "ok: s0..s5 and the head of the backup read as the source's snapshots"
w1=$(wr_bytes)
[ "$w1" -gt "$w0" ] || fail "the guest stopped writing ($w0 bytes written before the checks, $w1 after)"
log "the guest wrote $(((w1 - w0) >> 10)) KiB more meanwhile"

$QMP quit >/dev/null 2>&1 || true
for ((i = 0; i < 300; i++)); do
    kill -0 "$QPID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$QPID" 2>/dev/null && fail "QEMU did not quit"
must "fsck source" "$H" fsck "$SRC" >/dev/null
must "fsck backup" "$H" fsck "$DST" >/dev/null
snaps=$("$H" snapshot list "$DST" --output json | python3 -c 'import json,sys; print(" ".join(s["name"] for s in json.load(sys.stdin)))')
[ "$snaps" = "s0 s1 s2 s3 s4 s5" ] || fail "the backup has snapshots '$snaps'"
log "ok: fsck clean on both; $(($(date +%s) - t0)) s"
