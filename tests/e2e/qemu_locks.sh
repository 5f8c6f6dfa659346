#!/usr/bin/env bash
# Write locks across processes, through the patched QEMU: while one qemu-io
# holds a volume read-write, a second writer (qemu-io, qemu-img snapshot,
# hlfs snapshot create, a second qemu-system-x86_64) fails with the lock
# message naming the holder's pid and host; read-only openers (qemu-img info
# with and without -U, hlfs info, qemu-io -r) work meanwhile and see the
# flushed data. After SIGKILL of the holder its lock is stale: the next
# writer takes it over and finds everything flushed before the kill; of two
# writers racing for a stale lock exactly one wins. A lock naming another
# host is never taken over; `hlfs unlock` breaks it. A lock naming a live pid
# with another start time (the pid was reused) is taken over.
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
e2e_init
qemu_init

T=$E2E_WORK
V=hlfs:local://$T/vol
U=local://$T/vol
HOST=$(uname -n)
HPID_a="" HPID_b="" HPID_c="" HPID_d="" # set by holder_start

# holder_start NAME URI: starts `qemu-io URI` reading commands from the fifo
# $T/NAME.in (kept open on fd HFD_NAME), output in $T/NAME.out; sets
# HPID_NAME. qemu-io prints a prompt after each command has returned.
holder_start() {
    local n=$1 fd
    rm -f "$T/$n.in" "$T/$n.out"
    mkfifo "$T/$n.in"
    qemu-io "$2" <"$T/$n.in" >"$T/$n.out" 2>&1 &
    printf -v "HPID_$n" '%s' $!
    E2E_PIDS+=($!)
    exec {fd}>"$T/$n.in"
    printf -v "HFD_$n" '%s' "$fd"
}
prompts() { { grep -o 'qemu-io> ' "$T/$1.out" 2>/dev/null || true; } | wc -l; }
# wait_prompts NAME N: until qemu-io NAME printed N prompts (or died).
wait_prompts() {
    local n=$1 want=$2 i pid
    pid=HPID_$n
    for ((i = 0; i < 300; i++)); do
        [ "$(prompts "$n")" -ge "$want" ] && return 0
        kill -0 "${!pid}" 2>/dev/null || return 1
        sleep 0.1
    done
    fail "qemu-io $n: no prompt $want within 30 s:
$(cat "$T/$n.out")"
}
# holder_cmd NAME CMD: sends one command and waits until it has returned.
holder_cmd() {
    local n=$1 fd before
    fd=HFD_$n
    before=$(prompts "$n")
    echo "+ [qemu-io $n] $2" >&2
    printf '%s\n' "$2" >&"${!fd}"
    wait_prompts "$n" $((before + 1)) || fail "qemu-io $n died on '$2':
$(cat "$T/$n.out")"
    if tail -n +1 "$T/$n.out" | grep -Ei 'failed|error' >/dev/null; then
        fail "qemu-io $n: '$2' failed:
$(cat "$T/$n.out")"
    fi
}

must "create" qemu-img create -f hlfs "$V" 64M >/dev/null

# --- one holder ----------------------------------------------------------------
holder_start a "$V"
wait_prompts a 1 || fail "holder qemu-io did not open $V:
$(cat "$T/a.out")"
holder_cmd a 'write -P 0x5a 0 1048576'
holder_cmd a 'write -P 0x3c 4608 3584'
holder_cmd a 'flush'
pid=$HPID_a
log "holder: qemu-io pid $pid"
LOCKMSG="open read-write by pid $pid on host $HOST"

must_fail "second qemu-io read-write" "$LOCKMSG" qemu-io -c 'write -P 1 0 512' "$V"
must_fail "qemu-img snapshot -c" "$LOCKMSG" qemu-img snapshot -c s1 "$V"
must_fail "qemu-img resize" "$LOCKMSG" qemu-img resize "$V" 128M
must_fail "hlfs snapshot create" "$LOCKMSG" "$HLFS_CLI" snapshot create "$U" s1
rc=0
"$HLFS_CLI" snapshot create "$U" s1 2>/dev/null || rc=$?
[ $rc = 4 ] || fail "hlfs snapshot create on a locked volume exited $rc, expected 4 (locked)"
# A second QEMU: the -drive open fails, QEMU exits at startup.
must_fail "second qemu-system-x86_64" "$LOCKMSG" timeout 60 qemu-system-x86_64 -S -display none \
    -nodefaults -machine none -monitor none -drive "file=$V,if=none,id=d0"

# Read-only openers are not locked out and see the flushed data.
out=$(must "qemu-img info -U" qemu-img info -U "$V")
grep -q 'virtual size: 64 MiB' <<<"$out" || fail "qemu-img info -U: no size:
$out"
log "ok: qemu-img info -U works while the volume is held"
must "qemu-img info" qemu-img info "$V" >/dev/null
out=$(must "hlfs info" "$HLFS_CLI" info "$U")
grep -q "^writer: pid $pid on host $HOST" <<<"$out" || fail "hlfs info does not name the writer:
$out"
log "ok: hlfs info names the writer (pid $pid on host $HOST)"
qio "read-only qemu-io sees the flushed data" -r "$V" -- \
    'read -P 0x5a 0 4608' 'read -P 0x3c 4608 3584' 'read -P 0x5a 8192 1040384'
log "ok: read-only opens work while the volume is held"

# --- SIGKILL the holder: its lock is stale --------------------------------------
holder_cmd a 'write -P 0x77 2097152 4096' # not flushed: may or may not survive
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
[ -e "$T/vol/lock" ] || fail "no lock file left by the killed holder (nothing to take over)"
log "ok: SIGKILL left the lock of pid $pid behind"
qio "new writer takes the stale lock over and finds the flushed data" "$V" -- \
    'read -P 0x5a 0 4608' 'read -P 0x3c 4608 3584' 'read -P 0x5a 8192 1040384' \
    'write -P 0x21 1048576 4096' 'flush'
out=$(qemu-io -r -c 'read -P 0x77 2097152 4096' "$V" 2>&1) || true
if grep -q 'verification failed' <<<"$out"; then
    qio "the unflushed write did not land, so the block is still zeros" -r "$V" -- 'read -P 0 2097152 4096'
    log "the unflushed write before the kill did not survive (allowed)"
else
    log "the unflushed write before the kill survived (allowed)"
fi
[ ! -e "$T/vol/lock" ] || fail "the lock file is still there after a clean close: $(cat "$T/vol/lock")"
out=$(must "hlfs info" "$HLFS_CLI" info "$U")
grep -q '^writer: none' <<<"$out" || fail "hlfs info shows a writer after a clean close:
$out"
log "ok: the stale lock was taken over and released"

# --- two writers race for a stale lock: exactly one wins ------------------------
holder_start b "$V"
wait_prompts b 1 || fail "qemu-io b did not open $V:
$(cat "$T/b.out")"
holder_cmd b 'write -P 0x42 0 4096'
kill -KILL "$HPID_b"
wait "$HPID_b" 2>/dev/null || true
holder_start c "$V"
holder_start d "$V"
for ((i = 0; i < 300; i++)); do
    pc=$(prompts c) pd=$(prompts d)
    alive_c=0 alive_d=0
    kill -0 "$HPID_c" 2>/dev/null && alive_c=1
    kill -0 "$HPID_d" 2>/dev/null && alive_d=1
    # done when one has its prompt and the other has exited
    if { [ "$pc" -ge 1 ] && [ $alive_d = 0 ]; } || { [ "$pd" -ge 1 ] && [ $alive_c = 0 ]; }; then
        break
    fi
    [ $alive_c = 0 ] && [ $alive_d = 0 ] && fail "both racing writers exited:
c: $(cat "$T/c.out")
d: $(cat "$T/d.out")"
    sleep 0.1
done
if [ "$(prompts c)" -ge 1 ] && ! kill -0 "$HPID_d" 2>/dev/null; then
    win=c lose=d
elif [ "$(prompts d)" -ge 1 ] && ! kill -0 "$HPID_c" 2>/dev/null; then
    win=d lose=c
else
    fail "not exactly one winner among two writers racing for a stale lock:
c (pid $HPID_c): $(cat "$T/c.out")
d (pid $HPID_d): $(cat "$T/d.out")"
fi
wpid=HPID_$win
grep -q "open read-write by pid ${!wpid} on host $HOST" "$T/$lose.out" ||
    fail "the losing writer's error does not name the winner (pid ${!wpid}):
$(cat "$T/$lose.out")"
log "ok: two writers raced for the stale lock; exactly one won, the other was told its pid"
holder_cmd "$win" 'read -P 0x5a 4096 512'
wfd=HFD_$win
printf 'quit\n' >&"${!wfd}"
rc=0
wait "${!wpid}" || rc=$?
[ $rc = 0 ] || fail "the winning writer exited $rc on quit:
$(cat "$T/$win.out")"
[ ! -e "$T/vol/lock" ] || fail "lock still there after the winner quit: $(cat "$T/vol/lock")"

# --- a lock from another host is not taken over ---------------------------------
# The lock file holds pid=/host=/start= lines (engine/src/lock.rs).
# A live pid on this host whose start time differs is a reused pid: stale.
printf 'pid=1\nhost=%s\nstart=12345\n' "$HOST" >"$T/vol/lock"
qio "writer takes over a lock whose pid was reused" "$V" -- 'read -P 0x5a 4096 512' 'flush'
[ ! -e "$T/vol/lock" ] || fail "the reused-pid lock is still there: $(cat "$T/vol/lock")"
log "ok: a lock naming a live pid with another start time (pid reused) was taken over"
printf 'pid=1\nhost=some-other-host\nstart=1\n' >"$T/vol/lock"
must_fail "lock held on another host" 'open read-write by pid 1 on host some-other-host' \
    qemu-io -c 'write -P 1 0 512' "$V"
must "hlfs unlock" "$HLFS_CLI" unlock "$U" >/dev/null
qio "writer after hlfs unlock" "$V" -- 'read -P 0x5a 4096 512' 'write -P 0x43 0 512' 'flush'
log "passed"
