#!/usr/bin/env bash
# Faults of a real HDFS under a running guest (tests/crash/hdfs_guest_faults.py):
# fio in the test guest writes and later verifies, with O_DIRECT|O_SYNC,
# an hlfs volume on a MiniDFSCluster of tests/hdfs while two DataNodes stop
# and start, the NameNodes of an HA pair fail over, the only NameNode stops
# for longer than the retry window (werror=stop pauses the VM, cont resumes
# it), a space quota is reached (ENOSPC pauses the VM, cont after the quota
# is raised) and QEMU is killed on one host (two network namespaces) and the
# volume taken over from the other (hlfs unlock, lease recovery). Every
# acknowledged write must read back in a fresh QEMU; hlfs fsck after each.
#
# The script starts its own clusters (one NameNode, and an HA pair), so it
# needs Maven Central once (for tests/hdfs; cached after) and exits 77 if it
# cannot be reached. HLFS_HDFS_FAULTS=datanodes,kill runs some scenarios only;
# HLFS_CRASH_SEED=N repeats a run's random choices.
# Prints per scenario: SCENARIO: writes verified N, lost 0
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
e2e_init
qemu_init
crash_seed_args
command -v python3 >/dev/null || skip "python3 is not installed"
command -v java >/dev/null || skip "java is not installed (tests/hdfs needs a JDK and Maven)"

# The cluster's jar (cached): built now, so that a missing Maven Central
# is a skip and not a failure in the middle.
rc=0
bash "$HLFS_ROOT/tests/hdfs/cluster.sh" build >"$E2E_WORK/cluster-build.log" 2>&1 || rc=$?
[ $rc = 77 ] && skip "Maven Central cannot be reached to build the HDFS test cluster (tests/hdfs)"
[ $rc = 0 ] || { tail -n 30 "$E2E_WORK/cluster-build.log" >&2; fail "tests/hdfs/cluster.sh build failed"; }

# Two hosts for the kill scenario: the writer on host A, the takeover on
# host B (two network namespaces with host names of their own, and a
# cluster bound to the bridge between them; tests/lib/netns.sh).
# shellcheck source=../lib/netns.sh
. "$HLFS_ROOT/tests/lib/netns.sh"
HOSTS=()
trap 'netns_teardown; e2e_cleanup' EXIT
rc=0
netns_setup || rc=$?
if [ $rc = 0 ]; then
    json() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@"; }
    netns_argv a; a=$(json "${NETNS_ARGV[@]}")
    netns_argv b; b=$(json "${NETNS_ARGV[@]}")
    HOSTS=(--host-a "$a" --host-b "$b" --bind "$NETNS_GW")
    log "kill scenario: writer on host $NETNS_HOSTNAME_A, takeover on host $NETNS_HOSTNAME_B (cluster on $NETNS_GW)"
elif [ $rc = 77 ]; then
    log "kill scenario on one host: no network namespaces here ($NETNS_ERROR)"
else
    fail "tests/lib/netns.sh: $NETNS_ERROR"
fi

rc=0
python3 "$HLFS_ROOT/tests/crash/hdfs_guest_faults.py" --qemu-bin "$QEMU_BIN" --cli "$HLFS_CLI" \
    --build-guest "$HLFS_ROOT/tests/guest/build-guest.sh" --cluster "$HLFS_ROOT/tests/hdfs/cluster.sh" \
    --accel "$(guest_accel)" --work "$E2E_WORK/faults" "${HOSTS[@]}" \
    ${HLFS_HDFS_FAULTS:+--scenarios "$HLFS_HDFS_FAULTS"} "${SEED_ARGS[@]}" >"$E2E_WORK/counts" || rc=$?
cat "$E2E_WORK/counts"
[ $rc = 0 ] || fail "HDFS fault scenarios failed (see above)"
want=${HLFS_HDFS_FAULTS:-datanodes,failover,namenode,quota,kill}
for s in ${want//,/ }; do
    grep -Eq "^$s: writes verified [1-9][0-9]*, lost 0$" "$E2E_WORK/counts" ||
        fail "no passing count line for scenario $s: $(cat "$E2E_WORK/counts")"
done
log "passed"
