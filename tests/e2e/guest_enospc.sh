#!/usr/bin/env bash
# A full disk under a running guest, with werror=stop: the test guest's
# /dev/vdb is an hlfs volume on a small tmpfs, and fio in the guest writes
# more than the tmpfs holds (1 MiB O_DIRECT writes, crc32c verify headers).
# When the log runs out of space the driver returns ENOSPC and QEMU pauses
# the VM (query-status: io-error; query-block: io-status nospace). A filler
# file is then deleted and the VM continued (QMP cont): QEMU retries the
# failed requests on the same open volume, fio finishes, reads everything
# back and verifies it, and the guest powers off. hlfs fsck passes after.
# Needs root (mount); exit 77 otherwise.
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
[ "$(id -u)" = 0 ] || skip "needs root to mount a small tmpfs"
e2e_init
qemu_init

T=$E2E_WORK
MNT=$T/mnt
small_tmpfs "$MNT" 96m
QMP="python3 $HLFS_ROOT/tests/lib/qmp.py $T/qmp.sock"

declare -A G
"$HLFS_ROOT/tests/guest/build-guest.sh" >"$T/build-guest.out" 2>"$T/build-guest.err" ||
    { cat "$T/build-guest.err" >&2; fail "tests/guest/build-guest.sh failed"; }
while IFS='=' read -r k v; do
    if [ -n "$v" ]; then G[$k]=$v; fi
done <"$T/build-guest.out"
cp --sparse=always "${G[DISK]}" "$T/root.raw"

U=local://$MNT/vol
must "create" "$HLFS_CLI" create "$U" 256M >/dev/null
dd if=/dev/zero of="$MNT/filler" bs=1M count=48 status=none
log "tmpfs: $(df -h --output=avail "$MNT" | tail -n1 | tr -d ' ') available; fio will write 80 MiB"

MIB=80
SPEC="name=fill,rw=write,bs=1M,size=${MIB}M,ioengine=libaio,iodepth=4,direct=1,verify=crc32c,do_verify=1,verify_fatal=1"
# shellcheck disable=SC2046 # word splitting of the accelerator flags is wanted
HLFS_GC=off "$QEMU_BIN/qemu-system-x86_64" -m 256 $(guest_accel_args) -display none -nic none -no-reboot \
    -monitor none -qmp "unix:$T/qmp.sock,server=on,wait=off" -serial "file:$T/console.log" \
    -drive "file=$T/root.raw,if=virtio,format=raw,snapshot=on" \
    -drive "file=hlfs:$U,if=virtio,id=data,werror=stop,rerror=stop" \
    -kernel "${G[VMLINUX]:-${G[KERNEL]}}" -initrd "${G[INITRD]}" \
    -append "${G[CMDLINE]/root=LABEL=hlfs-root/root=/dev/vda2}" \
    -fw_cfg "name=opt/hlfs/cmd,string=fio:${SPEC//,/,,}" </dev/null >"$T/qemu.err" 2>&1 &
QPID=$!
E2E_PIDS+=("$QPID")

# Wait for the pause (the guest boots in a few seconds under KVM, ~10 under TCG).
status=""
for ((i = 0; i < 1800; i++)); do
    kill -0 "$QPID" 2>/dev/null || fail "QEMU exited before the disk filled up:
$(cat "$T/qemu.err")
--- console ---
$(tail -c 3000 "$T/console.log")"
    if [ -S "$T/qmp.sock" ]; then
        status=$($QMP query-status 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' || true)
        [ "$status" = io-error ] && break
    fi
    sleep 0.1
done
[ "$status" = io-error ] || fail "the VM did not pause on the full disk (status '$status')
--- console ---
$(tail -c 3000 "$T/console.log")"
iostatus=$($QMP query-block | python3 -c '
import json, sys
for b in json.load(sys.stdin):
    if b["device"] == "data":
        print(b.get("io-status", "none"))')
[ "$iostatus" = nospace ] || fail "query-block says io-status '$iostatus' for the data disk, expected nospace"
log "ok: the VM paused on the full disk (status io-error, io-status nospace); $(df -h --output=avail "$MNT" | tail -n1 | tr -d ' ') left"
# Still full: continuing pauses again at once (the writer is not broken,
# the disk is just full).
$QMP cont >/dev/null
sleep 1
status=$($QMP query-status | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
[ "$status" = io-error ] || fail "cont on a still-full disk: status '$status', expected io-error again"
log "ok: cont with the disk still full pauses again"

rm -f "$MNT/filler"
log "freed 48 MiB; cont"
$QMP cont >/dev/null
for ((i = 0; i < 1800; i++)); do
    kill -0 "$QPID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$QPID" 2>/dev/null && fail "the guest did not finish after cont (status $($QMP query-status 2>&1))
--- console ---
$(tail -c 3000 "$T/console.log")"
rc=0
wait "$QPID" || rc=$?
[ $rc = 0 ] || fail "QEMU exited $rc: $(cat "$T/qemu.err")"
grep -aq 'HLFS-GUEST: fio-end=fill' "$T/console.log" || fail "fio did not finish in the guest:
$(grep -a -v '^3;' "$T/console.log" | tail -c 4000)"
python3 - "$T/console.log" "$MIB" <<'PY' || fail "fio in the guest reported errors"
import json, re, sys
text = open(sys.argv[1], errors="replace").read()
mib = int(sys.argv[2])
job = json.loads(re.search(r"HLFS-GUEST: fio-begin=fill\r?\n(.*?)HLFS-GUEST: fio-end=fill", text, re.S).group(1))["jobs"][0]
w, r = job["write"]["io_bytes"], job["read"]["io_bytes"]
print(f"[guest_enospc] fio: error={job['error']}, wrote {w >> 20} MiB, read back and verified {r >> 20} MiB", file=sys.stderr)
if job["error"] or w != mib << 20 or r != mib << 20:
    sys.exit(1)
PY
log "ok: after cont, fio wrote all $MIB MiB and verified every block (crc32c)"
must "fsck" "$HLFS_CLI" fsck "$U" >/dev/null
log "ok: hlfs fsck passes"
log "passed"
