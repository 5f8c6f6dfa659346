#!/usr/bin/env bash
# Runs the whole test suite: the Rust tests of every crate, then the
# end-to-end tests in tests/e2e (each a script: exit 0 = passed, 77 =
# skipped, anything else = failed). The last line is the summary
# "tests: N passed, N failed, N skipped". This is the README's test command,
# and .ci/run calls exactly this.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/common.sh
need_cargo
need_apt gcc libc6-dev pkg-config e2fsprogs
# NBD clients for tests/e2e/serve_stock_qemu.sh (hlfs serve); zsh, so that
# cli/tests/generate.rs loads the zsh completion script, not just its first line.
need_apt libnbd-bin python3-libnbd zsh
# tests/e2e/virt_manager_gui.sh: virt-manager's window under Xvfb, driven by
# dogtail over the AT-SPI bus (virt-manager-patch/build.sh installs
# virt-manager's own run-time packages).
need_apt xvfb xauth dbus at-spi2-core python3-dogtail imagemagick mtools

step "building (release)"
cargo build --workspace --release --all-targets || exit 1
link_seed_tools "${CARGO_TARGET_DIR:-$root/target}/release"

# A real HDFS for the HDFS tests: Hadoop's MiniDFSCluster (tests/hdfs),
# 4 DataNodes, up for the whole run. Without Maven Central the HDFS tests
# are reported skipped, with that reason.
step "HDFS test cluster (tests/hdfs/cluster.sh)"
need_apt maven openjdk-17-jdk-headless
hdfs_dir=$(mktemp -d /tmp/hlfs-hdfs-cluster.XXXXXX)
hdfs_failed=0
bash tests/hdfs/cluster.sh start "$hdfs_dir"
case $? in
    0)
        export HADOOP_CONF_DIR="$hdfs_dir/conf" HLFS_HDFS_CLUSTER_DIR="$hdfs_dir"
        HLFS_TEST_HDFS="$(cat "$hdfs_dir/uri")/hlfs-test"
        export HLFS_TEST_HDFS
        trap 'bash tests/hdfs/cluster.sh stop "$hdfs_dir"; rm -rf "$hdfs_dir"' EXIT
        ;;
    77) echo "HDFS tests skipped: Maven Central cannot be reached to build the test cluster" >&2 ;;
    *) echo "FAILED: the HDFS test cluster did not start (log: $hdfs_dir/log)" >&2; hdfs_failed=1 ;;
esac

# Runs cargo test with the given arguments and adds its counts.
passed=0 failed=$hdfs_failed skipped=0
count_cargo() {
    local log rc p f i
    log=$(mktemp)
    cargo test "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    read -r p f i < <(grep -E '^test result:' "$log" |
        sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/' |
        awk '{p+=$1; f+=$2; i+=$3} END {print p+0, f+0, i+0}')
    rm -f "$log"
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1 # a crate failed to build or a test binary crashed
    fi
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + i))
}

step "cargo test"
if [ -n "${HLFS_TEST_HDFS:-}" ]; then
    # The real-HDFS tests (ignored without a cluster) run on their own below.
    count_cargo --workspace --release --no-fail-fast -- --skip real_hdfs
    step "cargo test: the real-HDFS tests against $HLFS_TEST_HDFS"
    # One at a time: one of them stops and starts DataNodes of the cluster.
    # hdfs: conformance, scenarios, DataNode loss; model, fencing, crash:
    # those suites on the real cluster (the crash test SIGKILLs writers).
    count_cargo --release -p hlfs --test hdfs --test model --test fencing --test crash --test readers \
        -- --ignored real_hdfs --test-threads 1
    export HLFS_HDFS_ENGINE_TESTS_RAN=1 # tests/e2e/hdfs.sh need not run them again
else
    count_cargo --workspace --release --no-fail-fast
fi

for t in tests/e2e/*.sh; do
    name=$(basename "$t" .sh)
    step "e2e: $name"
    start=$(date +%s)
    bash "$t"
    rc=$?
    secs=$(( $(date +%s) - start ))
    case $rc in
        0) passed=$((passed + 1)); echo "e2e $name: passed (${secs}s)" ;;
        77) skipped=$((skipped + 1)); echo "e2e $name: skipped" ;;
        *) failed=$((failed + 1)); echo "e2e $name: FAILED (exit $rc, ${secs}s)" ;;
    esac
done

echo
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
