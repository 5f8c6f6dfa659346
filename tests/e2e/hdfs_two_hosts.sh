#!/usr/bin/env bash
# Two hosts on one real HDFS: two network namespaces (tests/lib/netns.sh),
# each with its own host name, index cache and loopback, and a MiniDFSCluster
# of this script's own in the root namespace, bound to the bridge's address
# (`tests/hdfs/cluster.sh start DIR --bind ADDR`; the shared cluster of
# scripts/test.sh listens on 127.0.0.1, which a namespace cannot reach).
#   host A: hlfs create, qemu-io writes + flush, hlfs snapshot create,
#           hlfs clone, a write after the snapshot;
#   host B: reads the volume, its snapshot and the clone byte-exact, writes
#           the clone (host A then reads that);
#   writer lock: while host A's qemu-io holds the volume read-write, host B's
#           read-write open is refused, naming host A and its pid; host A's
#           writer killed (-9) after a flushed write: host B still may not
#           presume it dead (another host), breaks the lock with
#           `hlfs unlock`, takes over (lease recovery) and reads the write;
#   readers across hosts: host B's read-only view holds the segments host
#           A's gc retires until it closes (and reads through them); one
#           killed -9 holds them until its heartbeat lapses (`gc --wait`);
#   the same with both hosts under the machine's host name (one pid
#           namespace): the lock is then taken for a local one, refused while
#           the holder lives and taken over by itself once it is dead.
# Skipped (77) without root/network namespaces, or where Maven Central
# cannot be reached to build the cluster.
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
# shellcheck source=../lib/netns.sh
. "$HLFS_ROOT/tests/lib/netns.sh"
e2e_init
T0=$(date +%s%N)
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

CLUSTER=$E2E_WORK/hdfs
cleanup() {
    local pid
    for pid in "${E2E_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    bash "$HLFS_ROOT/tests/hdfs/cluster.sh" stop "$CLUSTER" || true
    netns_teardown
    e2e_cleanup
}
trap cleanup EXIT

netns_setup || { rc=$?; [ $rc = 77 ] && skip "$NETNS_ERROR"; fail "$NETNS_ERROR"; }
qemu_init

t=$(date +%s%N)
rc=0
bash "$HLFS_ROOT/tests/hdfs/cluster.sh" start "$CLUSTER" --bind "$NETNS_GW" || rc=$?
[ $rc = 77 ] && skip "the HDFS test cluster cannot be built (Maven Central unreachable)"
[ $rc = 0 ] || fail "the HDFS test cluster did not start with --bind $NETNS_GW (log: $CLUSTER/log)"
log "cluster bound to $NETNS_GW started in $(ms "$t") ms"
URI=$(cat "$CLUSTER/uri")
export HADOOP_CONF_DIR=$CLUSTER/conf
PORT=${URI##*:}
[ "$URI" = "hdfs://$NETNS_GW:$PORT" ] || fail "the bound cluster's URI is $URI, not hdfs://$NETNS_GW:PORT"

# on HOST CMD...: CMD on host a or b, with that host's own index cache (the
# hosts share the file system; two machines would not share ~/.cache).
on() {
    local h=$1
    shift
    netns_exec "$h" env HLFS_INDEX_DIR="$E2E_WORK/index-$h" "$@"
}
# qio and qio_must_mismatch (tests/lib/qemu.sh) call `qemu-io`: run it on
# host $HOST.
HOST=""
qemu-io() { on "${HOST:?qemu-io: set HOST}" qemu-io "$@"; }

# The two hosts are apart: each has its own host name and loopback; the
# cluster is reachable at the bridge's address only.
for h in a b; do
    name=$(netns_exec $h cat /proc/sys/kernel/hostname)
    want=$NETNS_HOSTNAME_A
    [ $h = b ] && want=$NETNS_HOSTNAME_B
    [ "$name" = "$want" ] && [ "$name" != "$(cat /proc/sys/kernel/hostname)" ] ||
        fail "host $h's host name is '$name', expected '$want'"
    netns_exec $h bash -c 'exec 3<>"/dev/tcp/$1/$2"' sh "$NETNS_GW" "$PORT" 2>/dev/null ||
        fail "host $h cannot reach the NameNode at $NETNS_GW:$PORT"
    ! netns_exec $h bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' sh "$PORT" 2>/dev/null ||
        fail "host $h reaches 127.0.0.1:$PORT: it is not a namespace of its own"
done
log "ok: hosts $NETNS_HOSTNAME_A and $NETNS_HOSTNAME_B reach $NETNS_GW:$PORT, not 127.0.0.1:$PORT"

base=$URI/two-hosts
V=hlfs:$base/vol
C=hlfs:$base/clone

# Host A: create, write, flush, snapshot, clone, write on.
must "create on host A" on a "$HLFS_CLI" create "$V" 64M >/dev/null
HOST=a qio "write on host A" "$V" -- 'write -P 0xa1 0 1M' 'write -P 0xb2 32M 64k' 'flush'
must "snapshot on host A" on a "$HLFS_CLI" snapshot create "$V" s1 >/dev/null
must "clone on host A" on a "$HLFS_CLI" clone "$V%s1" "$C" >/dev/null
HOST=a qio "overwrite on host A after the snapshot" "$V" -- 'write -P 0xc3 0 4k' 'flush'

# Host B: everything host A wrote, byte-exact (a DataNode at 127.0.0.1 would
# fail every read here: host B's loopback has none).
HOST=b qio "host B reads the volume" -r "$V" -- 'read -P 0xc3 0 4k' 'read -P 0xa1 4k 1020k' \
    'read -P 0 1M 31M' 'read -P 0xb2 32M 64k' 'read -P 0 33M 31M'
HOST=b qio_must_mismatch "the reads above can fail" -r "$V" -- 'read -P 0xa1 0 4k'
HOST=b qio "host B reads the snapshot" -r "$V%s1" -- 'read -P 0xa1 0 1M' 'read -P 0xb2 32M 64k'
list=$(must "snapshot list on host B" on b "$HLFS_CLI" snapshot list "$V")
grep -qw s1 <<<"$list" || fail "host B does not list snapshot s1: $list"
HOST=b qio "host B reads the clone" -r "$C" -- 'read -P 0xa1 0 1M' 'read -P 0xb2 32M 64k'
HOST=b qio "host B writes the clone" "$C" -- 'write -P 0xd4 8k 4k' 'flush' 'read -P 0xa1 0 8k'
HOST=a qio "host A reads host B's clone write" -r "$C" -- 'read -P 0xd4 8k 4k' 'read -P 0xa1 12k 4k'
log "ok: host B read host A's volume, snapshot and clone; host A read host B's write"

# hold HOST: qemu-io on HOST opens $V read-write, writes 0x42 at 2M, flushes,
# then writes 0x44 at 3M unflushed; sets HOLDER to its pid.
hold() {
    local h=$1 out=$E2E_WORK/holder-$1.out fifo=$E2E_WORK/holder-$1.cmd
    rm -f "$fifo"
    mkfifo "$fifo"
    netns_argv "$h"
    "${NETNS_ARGV[@]}" env HLFS_INDEX_DIR="$E2E_WORK/index-$h" "$QEMU_BIN/qemu-io" "$V" <"$fifo" >"$out" 2>&1 &
    HOLDER=$!
    E2E_PIDS+=("$HOLDER")
    exec 7>"$fifo"
    # One command at a time, each once the previous one has answered:
    # qemu-io reads its commands with fgets, so lines that arrive together
    # wait in stdio's buffer until more input comes.
    local c n=1 _
    for c in 'write -P 0x42 2M 4k' 'flush' 'write -P 0x44 3M 4k'; do
        printf '%s\n' "$c" >&7
        n=$((n + 1))
        for _ in $(seq 600); do
            [ "$(grep -o 'qemu-io> ' "$out" | wc -l)" -ge $n ] && break
            kill -0 "$HOLDER" 2>/dev/null || break
            sleep 0.1
        done
        [ "$(grep -o 'qemu-io> ' "$out" | wc -l)" -ge $n ] ||
            fail "qemu-io on host $h holding $V did not finish '$c' within 60 s:
$(cat "$out")"
    done
    [ "$(grep -o 'wrote 4096/4096 bytes at offset' "$out" | wc -l)" = 2 ] &&
        ! grep -qiE 'fail|error' "$out" ||
        fail "qemu-io on host $h could not hold and write $V:
$(cat "$out")"
    # The pid the lock records is qemu-io's own (netns_argv execs all the way).
    [ "$(cat "/proc/$HOLDER/comm")" = qemu-io ] || fail "pid $HOLDER is $(cat "/proc/$HOLDER/comm"), not qemu-io"
}
kill_holder() {
    kill -KILL "$HOLDER"
    wait "$HOLDER" 2>/dev/null || true
    exec 7>&-
}

# Two hosts with their own names: a holder on another host is never presumed
# dead, alive or not.
hold a
must_fail "host B's read-write open while host A writes" \
    "open read-write by pid $HOLDER on host $NETNS_HOSTNAME_A; .*hlfs unlock" \
    on b "$QEMU_BIN/qemu-io" -c 'read 0 4k' "$V"
HOST=b qio "host B reads while host A writes" -r "$V" -- 'read -P 0xc3 0 4k' 'read -P 0xb2 32M 64k'
kill_holder
must_fail "host B's read-write open after host A's writer died (another host: not presumed dead)" \
    "open read-write by pid $HOLDER on host $NETNS_HOSTNAME_A" \
    on b "$QEMU_BIN/qemu-io" -c 'read 0 4k' "$V"
out=$(must "hlfs unlock on host B" on b "$HLFS_CLI" unlock "$V")
grep -q "held by pid $HOLDER on host $NETNS_HOSTNAME_A" <<<"$out" || fail "hlfs unlock said: $out"
t=$(date +%s%N)
HOST=b qio "host B takes over: host A's flushed write survives kill -9 (lease recovery)" "$V" -- \
    'read -P 0x42 2M 4k' 'read -P 0xc3 0 4k' 'write -P 0x43 2M 4k' 'flush'
log "takeover on host B (lease recovery) took $(ms "$t") ms"
HOST=a qio "host A reads host B's write after the takeover" -r "$V" -- 'read -P 0x43 2M 4k' 'read -P 0xa1 4k 4k'

# Readers across hosts (engine/src/registry.rs), on a volume of their own:
# host B holds a read-only view of it open; host A overwrites it and cleans
# it. The retired segments are held back by host B's reader, judged alive by
# its heartbeat (it is on another host), and the view still reads what it
# read. Its close deletes them. A second reader killed with -9 holds them
# only until its heartbeat lapses (4 beats of 1 s, by the NameNode's clock):
# host A's `hlfs gc --wait` then returns with nothing left.
R=hlfs:$base/readers
must "create on host A" on a "$HLFS_CLI" create "$R" 64M >/dev/null
HOST=a qio "fill on host A" "$R" -- 'write -P 0x61 0 64M' 'flush'
# reader NAME SLEEP_MS: qemu-io -r on host B, heartbeat 1 s, that sleeps and
# then checks the first byte range; sets READER to its pid.
reader() {
    netns_argv b
    "${NETNS_ARGV[@]}" env HLFS_INDEX_DIR="$E2E_WORK/index-b" HLFS_READER_HEARTBEAT=1 \
        "$QEMU_BIN/qemu-io" -r -c "sleep $2" -c 'read -P 0x61 0 1M' -c 'read -P 0x61 63M 1M' "$R" \
        >"$E2E_WORK/$1.out" 2>&1 &
    READER=$!
    E2E_PIDS+=("$READER")
    sleep 3 # opened and registered (an open on HDFS takes ~1 s)
    kill -0 "$READER" 2>/dev/null || fail "reader $1 on host B exited early: $(cat "$E2E_WORK/$1.out")"
}
# gc_held: hlfs gc on host A; prints "HOST REMOTE" of the one reader holding
# segments back, or "none".
gc_held() {
    on a "$HLFS_CLI" gc --output json "$@" "$R" | python3 -c '
import json, sys
r = json.load(sys.stdin)
h = r["held"]
print(" ".join([h[0]["readers"][0]["host"], str(h[0]["readers"][0]["remote"]), str(r["segments_cleaned"])]) if h else "none " + str(r["segments_cleaned"]))'
}
retired_bytes() {
    on a "$HLFS_CLI" du --output json "$R" | python3 -c 'import json, sys; print(json.load(sys.stdin)["files"]["retired_bytes"])'
}
reader r1 12000
HOST=a qio "overwrite on host A while host B reads" "$R" -- 'write -P 0x62 0 64M' 'write -P 0x63 0 64M' 'flush'
held=$(gc_held) || fail "hlfs gc on host A failed"
[[ "$held" == "$NETNS_HOSTNAME_B True "* ]] && [ "${held##* }" -gt 0 ] ||
    fail "hlfs gc on host A: expected segments held back by host B's reader (remote), got: $held"
[ "$(retired_bytes)" -gt 0 ] || fail "nothing retired is left while host B reads"
wait "$READER" || fail "host B's reader failed: $(cat "$E2E_WORK/r1.out")"
grep -q 'read 1048576/1048576 bytes at offset 66060288' "$E2E_WORK/r1.out" && ! grep -qi 'fail\|error' "$E2E_WORK/r1.out" ||
    fail "host B's reader did not read what it read at open after host A's gc: $(cat "$E2E_WORK/r1.out")"
[ "$(retired_bytes)" = 0 ] || fail "host B's reader closed, yet retired bytes are left: $(retired_bytes)"
log "ok: host B's reader held host A's cleaned segments, read through them, and its close deleted them"
reader r2 600000
HOST=a qio "overwrite on host A while host B reads again" "$R" -- 'write -P 0x64 0 64M' 'write -P 0x65 0 64M' 'flush'
held=$(gc_held) || fail "hlfs gc on host A failed"
[[ "$held" == "$NETNS_HOSTNAME_B True "* ]] || fail "expected host B's second reader to hold segments back, got: $held"
kill -KILL "$READER"
wait "$READER" 2>/dev/null || true
t=$(date +%s%N)
out=$(must "hlfs gc --wait on host A after host B's reader died" on a "$HLFS_CLI" gc --wait "$R" 2>&1)
waited=$(ms "$t")
[ "$(retired_bytes)" = 0 ] || fail "hlfs gc --wait returned with retired bytes left: $out"
[ "$waited" -ge 1000 ] || fail "hlfs gc --wait returned in $waited ms: the dead reader's heartbeat cannot have lapsed yet: $out"
grep -q "held back: .*host $NETNS_HOSTNAME_B" <<<"$out" || fail "hlfs gc --wait did not say who it waited for: $out"
log "ok: a reader killed on host B held segments until its heartbeat lapsed ($waited ms of hlfs gc --wait)"

# The same hosts under one host name (the machine's) and one pid namespace:
# the lock names a host equal to the opener's, so it is judged as local.
NETNS_HOSTNAME_A="" NETNS_HOSTNAME_B=""
me=$(cat /proc/sys/kernel/hostname)
hold a
must_fail "same host name: host B's read-write open while host A's writer lives" \
    "open read-write by pid $HOLDER on host $me; close it there" \
    on b "$QEMU_BIN/qemu-io" -c 'read 0 4k' "$V"
kill_holder
HOST=b qio "same host name: host A's dead writer's lock is taken over without hlfs unlock" "$V" -- \
    'read -P 0x42 2M 4k' 'read -P 0xa1 4k 4k'

log "passed in $(ms "$T0") ms"
