# shellcheck shell=bash
# Two network namespaces as two "hosts" on one machine, for the tests that
# need a second host (tests/e2e/hdfs_two_hosts.sh). Sourced, not run.
#
#   netns_setup || { rc=$?; [ $rc = 77 ] && skip "$NETNS_ERROR"; fail "$NETNS_ERROR"; }
#   trap 'netns_teardown; e2e_cleanup' EXIT     # idempotent; also after a partial setup
#   netns_exec a CMD ARGS...                    # CMD runs on host A (B: `netns_exec b ...`)
#   netns_argv a; "${NETNS_ARGV[@]}" CMD ... &  # the same in the background, $! = CMD's pid
#
# netns_setup makes, with a random suffix S so that concurrent runs do not
# collide:
#   a bridge NETNS_BR (hlfsbrS) in the root namespace with NETNS_GW, the
#     address a service in the root namespace binds to so that both hosts
#     reach it (e.g. `tests/hdfs/cluster.sh start DIR --bind $NETNS_GW`);
#   namespaces NETNS_A (hlfs-a-S) and NETNS_B (hlfs-b-S), each with lo up and
#     an eth0 on the bridge: NETNS_ADDR_A, NETNS_ADDR_B, in 10.213.N.0/24
#     (N picked free under a lock; NETNS_GW is 10.213.N.1). No default route:
#     a host reaches the bridge's subnet only. Its 127.0.0.1 is its own.
#   NETNS_HOSTNAME_A / NETNS_HOSTNAME_B (the namespace names): netns_exec
#     runs the command in a UTS namespace of its own with that host name, as
#     on two real hosts (`hostname` and /proc/sys/kernel/hostname say it).
#     Set one to "" to run that host's commands with the machine's host name.
# The hosts share everything else with the machine: the file system, the pid
# namespace (pids are the machine's), users.
# netns_setup returns 77 with the reason in NETNS_ERROR (and on stderr) when
# namespaces cannot be made here (not root, no `ip`, no netns/veth/bridge
# support), 1 on other errors.
# netns_teardown kills what still runs in the two namespaces (only processes
# started there, by this run), deletes them and the bridge.

NETNS_A="" NETNS_B="" NETNS_BR="" NETNS_GW="" NETNS_ADDR_A="" NETNS_ADDR_B=""
NETNS_HOSTNAME_A="" NETNS_HOSTNAME_B="" NETNS_ERROR=""
NETNS_LOCK=${NETNS_LOCK:-/run/lock/hlfs-netns.lock}

_netns_err() {
    NETNS_ERROR=$2
    printf '[netns] %s\n' "$2" >&2
    return "$1"
}

netns_setup() {
    [ "$(id -u)" = 0 ] || { _netns_err 77 "network namespaces need root"; return; }
    command -v ip >/dev/null || { _netns_err 77 "no 'ip' command (apt-get install iproute2)"; return; }
    command -v unshare >/dev/null || { _netns_err 77 "no 'unshare' command (util-linux)"; return; }
    local s
    s=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
    NETNS_A=hlfs-a-$s NETNS_B=hlfs-b-$s NETNS_BR=hlfsbr$s
    NETNS_HOSTNAME_A=$NETNS_A NETNS_HOSTNAME_B=$NETNS_B
    local err
    if ! err=$(ip netns add "$NETNS_A" 2>&1); then
        NETNS_A=""
        _netns_err 77 "cannot create a network namespace here (ip netns add: $err)"
        return
    fi
    if ! err=$(ip netns add "$NETNS_B" 2>&1); then
        NETNS_B=""
        netns_teardown
        _netns_err 1 "ip netns add $NETNS_B: $err"
        return
    fi
    if ! err=$(ip link add "$NETNS_BR" type bridge 2>&1); then
        NETNS_BR=""
        netns_teardown
        _netns_err 77 "cannot create a bridge here (ip link add type bridge: $err)"
        return
    fi
    # Pick a free 10.213.N.0/24 under a lock, so two runs starting at once
    # cannot both take N: the address on the bridge marks it taken.
    local fd n tries=0
    mkdir -p "$(dirname "$NETNS_LOCK")"
    exec {fd}>"$NETNS_LOCK"
    flock -w 30 "$fd" || { exec {fd}>&-; netns_teardown; _netns_err 1 "cannot lock $NETNS_LOCK"; return; }
    while :; do
        n=$(( $(od -An -N1 -tu1 /dev/urandom) ))
        if ! ip -4 -o addr show | grep -q " 10\.213\.$n\." &&
            ! ip -4 route show | grep -q "^10\.213\.$n\."; then
            break
        fi
        tries=$((tries + 1))
        [ $tries -lt 200 ] || { exec {fd}>&-; netns_teardown; _netns_err 1 "no free subnet in 10.213.0.0/16"; return; }
    done
    NETNS_GW=10.213.$n.1 NETNS_ADDR_A=10.213.$n.2 NETNS_ADDR_B=10.213.$n.3
    if ! err=$(ip addr add "$NETNS_GW/24" dev "$NETNS_BR" 2>&1 && ip link set "$NETNS_BR" up 2>&1); then
        exec {fd}>&-
        netns_teardown
        _netns_err 1 "cannot put $NETNS_GW on $NETNS_BR: $err"
        return
    fi
    exec {fd}>&-
    local h ns addr veth
    for h in a b; do
        if [ $h = a ]; then ns=$NETNS_A addr=$NETNS_ADDR_A; else ns=$NETNS_B addr=$NETNS_ADDR_B; fi
        veth=hlfs$h$s
        if ! err=$(ip link add "$veth" type veth peer name eth0 netns "$ns" 2>&1); then
            netns_teardown
            _netns_err 77 "cannot create a veth pair here (ip link add type veth: $err)"
            return
        fi
        if ! err=$( (ip link set "$veth" master "$NETNS_BR" && ip link set "$veth" up &&
            ip -n "$ns" link set lo up && ip -n "$ns" addr add "$addr/24" dev eth0 &&
            ip -n "$ns" link set eth0 up) 2>&1); then
            netns_teardown
            _netns_err 1 "cannot set up host $h ($ns, $addr): $err"
            return
        fi
    done
    # The hosts' side of the bridge comes up asynchronously; wait until a
    # host reaches the bridge's address (IPv6 DAD does not matter here).
    local i
    for i in $(seq 50); do
        if ip -n "$NETNS_A" -4 addr show dev eth0 | grep -q "$NETNS_ADDR_A" &&
            [ "$(ip -n "$NETNS_A" -br link show dev eth0 | awk '{print $2}')" = UP ] &&
            [ "$(ip -n "$NETNS_B" -br link show dev eth0 | awk '{print $2}')" = UP ]; then
            break
        fi
        sleep 0.1
    done
    printf '[netns] hosts %s (%s) and %s (%s) on bridge %s (%s)\n' \
        "$NETNS_A" "$NETNS_ADDR_A" "$NETNS_B" "$NETNS_ADDR_B" "$NETNS_BR" "$NETNS_GW" >&2
}

# netns_exec a|b CMD ARGS...: runs CMD on that host: in its network
# namespace, and in a UTS namespace with NETNS_HOSTNAME_<host> as host name
# unless that is empty.
netns_exec() {
    netns_argv "${1:-}" || return
    shift
    "${NETNS_ARGV[@]}" "$@"
}

# netns_argv a|b: sets the array NETNS_ARGV to the command prefix that
# netns_exec uses. Each part execs the next, so a command started with it in
# the background has its own pid in $! (a function run with & would leave
# the pid of a subshell):
#   netns_argv a; "${NETNS_ARGV[@]}" qemu-io "$V" <fifo & holder=$!
netns_argv() {
    local ns name
    case ${1:-} in
        a) ns=$NETNS_A name=$NETNS_HOSTNAME_A ;;
        b) ns=$NETNS_B name=$NETNS_HOSTNAME_B ;;
        *) echo "netns_argv: the host is 'a' or 'b', not '${1:-}'" >&2; return 2 ;;
    esac
    [ -n "$ns" ] || { echo "netns_argv: netns_setup has not run" >&2; return 2; }
    NETNS_ARGV=(ip netns exec "$ns")
    if [ -n "$name" ]; then
        # The host name is an argument of sh, never part of its script.
        NETNS_ARGV+=(unshare --uts -- sh -c 'printf %s "$1" >/proc/sys/kernel/hostname && shift && exec "$@"' sh "$name")
    fi
}

# netns_teardown: idempotent; safe after a partial netns_setup.
netns_teardown() {
    local ns pid
    for ns in "$NETNS_A" "$NETNS_B"; do
        [ -n "$ns" ] || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || true
    done
    [ -z "$NETNS_BR" ] || ip link del "$NETNS_BR" 2>/dev/null || true
    NETNS_A="" NETNS_B="" NETNS_BR=""
}
