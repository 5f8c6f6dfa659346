#!/usr/bin/env bash
# Stock QEMU and other clients without the HLFS driver, through `hlfs serve`
# (issue 16): Debian's own unpatched qemu-system-x86 7.2
# (tests/lib/stock-qemu.sh) boots the test guest from an hlfs volume
#   - over NBD (SeaBIOS boots the disk through virtio-blk), and
#   - through vhost-user-blk (kernel booted directly: under TCG SeaBIOS
#     cannot drive a vhost-user disk, a kernel can),
# and each boot's marker is on the volume afterwards (hlfs export,
# read-marker.sh, e2fsck). Then libnbd's tools and qemu-img read and write
# through an export (nbdinfo, nbdcopy both ways, two clients at once,
# qemu-img compare), a `%snap` export is read-only, the server holds the
# writer lock (named in the refusal), and tests/crash/serve_crash.py kills
# the server with SIGKILL at 20 points: no acknowledged write is lost.
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
# shellcheck source=../lib/stock-qemu.sh
. "$HLFS_ROOT/tests/lib/stock-qemu.sh"
e2e_init
qemu_init
T0=$(date +%s%N)
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

rc=0
stock_qemu_init || rc=$?
[ $rc = 77 ] && skip "$STOCK_QEMU_ERROR"
[ $rc = 0 ] || fail "$STOCK_QEMU_ERROR"
log "stock QEMU: $STOCK_QEMU_VERSION ($STOCK_QEMU)"
for t in nbdinfo nbdcopy; do
    command -v "$t" >/dev/null || fail "$t is missing: apt-get install libnbd-bin (.ci/run installs it)"
done
/usr/bin/python3 -c 'import nbd' 2>/dev/null || fail "Debian's python3 lacks libnbd: apt-get install python3-libnbd"

T=$E2E_WORK
GUEST=$HLFS_ROOT/tests/guest
ACCEL=$(guest_accel)
PIDF=$T/serve.pid
SERVER=""
# serve ARGS...: hlfs serve ... --daemonize; sets SERVER to the daemon's pid.
serve() {
    rm -f "$PIDF"
    must "hlfs serve $*" "$HLFS_CLI" serve "$@" --daemonize --pid-file "$PIDF" >/dev/null
    SERVER=$(cat "$PIDF")
    E2E_PIDS+=("$SERVER")
}
# stop: SIGTERM to the daemon, then wait until it is gone (it is not our
# child: it daemonized; a zombie whose threads are all gone counts as gone).
stop() {
    kill -TERM "$SERVER"
    pid_gone "$SERVER" 10 || fail "the hlfs serve daemon (pid $SERVER) did not exit on SIGTERM within 10 s"
    SERVER=""
}
# boot NAME MARKER [-k] -- QEMU ARGS: Debian's QEMU boots the guest, which writes MARKER.
boot() {
    local name=$1 marker=$2 k=() start
    shift 2
    [ "${1:-}" = -k ] && { k=(-k); shift; }
    [ "${1:-}" = -- ] && shift
    start=$(date +%s%N)
    HLFS_GUEST_ACCEL=$ACCEL "$GUEST/run-guest.sh" -q "$STOCK_QEMU" "${k[@]}" -D "${DRIVE:-none}" -c "write:$marker" \
        -l "$T/$name.log" -t "${HLFS_BOOT_TIMEOUT:-200}" -- "${STOCK_QEMU_ARGS[@]}" "$@" 2>"$T/$name.err" ||
        fail "stock QEMU boot '$name' failed:
$(cat "$T/$name.err")
--- serial console ---
$(tail -c 3000 "$T/$name.log")"
    grep -aq "HLFS-GUEST: wrote=$marker" "$T/$name.log" || fail "boot '$name': the guest did not write its marker"
    log "ok: Debian's QEMU booted the guest from the hlfs volume ($name, $ACCEL) in $(ms "$start") ms"
}
# marker URI EXPECTED: the guest's marker file in the volume, read offline.
marker() { guest_marker "$1" "$2" "$ROOT_SECTOR"; }

DISK=$("$GUEST/build-guest.sh" 2>"$T/build-guest.err" | tail -n1) && [ -f "$DISK" ] ||
    fail "tests/guest/build-guest.sh failed: $(cat "$T/build-guest.err")"
ROOT_SECTOR=$(sfdisk -d "$DISK" | sed -n 's/.*start= *\([0-9][0-9]*\),.*type=83.*/\1/p' | head -1)
B=local://$T/boot
must "import the guest disk" "$HLFS_CLI" import "$DISK" "$B" >/dev/null

# --- NBD: the disk boots through SeaBIOS ----------------------------------------
serve "$B" --nbd "unix:$T/nbd.sock"
must_fail "a read-write open while the server holds the volume" "open read-write by pid $SERVER" \
    "$HLFS_CLI" snapshot create "$B" s0
DRIVE="file=nbd+unix:///boot?socket=$T/nbd.sock,if=virtio,format=raw" boot nbd stock-nbd
stop
marker "$B" stock-nbd

# --- vhost-user-blk ----------------------------------------------------------
serve "$B" --vhost-user-blk "$T/vub.sock"
boot vhost-user-blk stock-vub -k -- -object memory-backend-memfd,id=mem,size=256M,share=on \
    -machine memory-backend=mem -chardev "socket,id=vub,path=$T/vub.sock" -device vhost-user-blk-pci,chardev=vub
stop
marker "$B" stock-vub
log "ok: both boots' markers are on the volume, and its file system is clean"

# --- libnbd's tools and qemu-img through an export ---------------------------------
D=local://$T/data
must "create" "$HLFS_CLI" create "$D" 64M >/dev/null
serve "$D" --nbd "unix:$T/data.sock" --name data
NBD="nbd+unix:///data?socket=$T/data.sock"
info=$(must "nbdinfo" nbdinfo --json "$NBD")
python3 -c '
import json, sys
d = json.loads(sys.argv[1])
e = d["exports"][0]
assert e["export-size"] == 64 << 20, e
assert not e["is_read_only"], e
assert e["can_flush"] and e["can_fua"], e
' "$info" || fail "nbdinfo: unexpected export: $info"
head -c $((32 << 20)) /dev/urandom >"$T/in.raw"
must "nbdcopy into the export" nbdcopy "$T/in.raw" "$NBD" >/dev/null
# Two clients at once, each on a connection of its own.
nbdcopy "$NBD" "$T/out1.raw" & c1=$!
nbdcopy "$NBD" "$T/out2.raw" & c2=$!
wait $c1 || fail "the first of two concurrent nbdcopy reads failed"
wait $c2 || fail "the second of two concurrent nbdcopy reads failed"
for f in out1 out2; do
    cmp -n $((32 << 20)) "$T/in.raw" "$T/$f.raw" || fail "nbdcopy read back ($f) differs from what was written"
    [ "$(head -c $((32 << 20)) "$T/$f.raw" | wc -c)" = $((32 << 20)) ] || fail "$f is short"
    cmp <(tail -c +$(((32 << 20) + 1)) "$T/$f.raw") <(head -c $((32 << 20)) /dev/zero) ||
        fail "the unwritten half of the export ($f) does not read as zeros"
done
truncate -s 64M "$T/in.raw"
out=$(must "qemu-img compare" qemu-img compare -f raw -F raw "$T/in.raw" "$NBD")
grep -q "Images are identical" <<<"$out" || fail "qemu-img compare: $out"
stop
out=$(must "qemu-img compare with the volume itself" qemu-img compare -f raw "$T/in.raw" "hlfs:$D")
grep -q "Images are identical" <<<"$out" || fail "the volume differs from what nbdcopy wrote: $out"
log "ok: nbdinfo, nbdcopy (one writer, two readers at once) and qemu-img through the export"

# --- a snapshot exports read-only ------------------------------------------------
must "snapshot" "$HLFS_CLI" snapshot create "$D" s1 >/dev/null
serve "$D%s1" --nbd "unix:$T/snap.sock" --name s1
SNAP="nbd+unix:///s1?socket=$T/snap.sock"
nbdinfo --json "$SNAP" | python3 -c 'import json, sys; e = json.load(sys.stdin)["exports"][0]; assert e["is_read_only"], e' ||
    fail "the %s1 export is not read-only"
qio_must_mismatch "the snapshot export's data can fail the check" -f raw -r "$SNAP" -- 'read -P 0x99 0 4k'
out=$(qemu-io -f raw -c 'write -P 1 0 4k' "$SNAP" 2>&1) && ! grep -qi 'fail\|error\|denied\|read-only' <<<"$out" &&
    fail "a write to the read-only snapshot export went through: $out"
cmp <(nbdcopy "$SNAP" - | head -c $((32 << 20))) <(head -c $((32 << 20)) "$T/in.raw") ||
    fail "the snapshot export does not read what was written"
stop
log "ok: URI%s1 is exported read-only and reads the snapshot"

# --- SIGKILL of the server loses no acknowledged write --------------------------
C=local://$T/crash
must "create" "$HLFS_CLI" create "$C" 64M >/dev/null
mkdir -p "$T/crash-work"
/usr/bin/python3 "$HLFS_ROOT/tests/crash/serve_crash.py" --hlfs "$HLFS_CLI" --uri "$C" --work "$T/crash-work" \
    --points "${HLFS_SERVE_CRASH_POINTS:-20}" >"$T/crash.out" 2>&1 ||
    fail "tests/crash/serve_crash.py failed:
$(tail -n 20 "$T/crash.out")"
log "ok: $(tail -n 1 "$T/crash.out")"
out=$(must "fsck after the crashes" "$HLFS_CLI" fsck "$C")
log "passed in $(ms "$T0") ms"
