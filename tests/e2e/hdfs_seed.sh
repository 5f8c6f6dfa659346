#!/usr/bin/env bash
# The seed guide's commands on HDFS, verbatim (../shared/seed/
# hlfs-qemu-guide.zh.md): hlfs:hdfs:///tmp/testenv/testfs names the default
# filesystem of $HADOOP_CONF_DIR, which the test cluster of tests/hdfs
# writes. qemu-img create/info/convert/snapshot -c/-l/-d, the clone form
# `qemu-img create -b VOL%snapshot1 NEW`, and the standalone snapshot.hlfs
# and clone.hlfs. Skipped without a cluster (HLFS_TEST_HDFS unset).
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
[ -n "${HLFS_TEST_HDFS:-}" ] || skip "HLFS_TEST_HDFS is not set (hdfs://host:port/dir of a test cluster; see docs/hdfs.md)"
[ -n "${HADOOP_CONF_DIR:-}" ] || skip "HADOOP_CONF_DIR is not set: hdfs:/// needs the cluster's fs.defaultFS"
e2e_init
qemu_init

# The guide runs ./qemu-img from QEMU's build directory, and the seed's
# tools from the build's output (scripts/test.sh links them by those names).
ln -s "$QEMU_BIN/qemu-img" "$E2E_WORK/qemu-img"
TOOLS=$(dirname "$HLFS_CLI")
[ -x "$TOOLS/snapshot.hlfs" ] || fail "$TOOLS/snapshot.hlfs is missing (scripts/common.sh link_seed_tools)"
cd "$E2E_WORK"
FS=hlfs:hdfs:///tmp/testenv/testfs
FS2=hlfs:hdfs:///tmp/testenv/testfs2
clean() { for v in testfs3 testfs2 testfs; do "$HLFS_CLI" delete "hdfs:///tmp/testenv/$v" >/dev/null 2>&1 || true; done; }
clean # a run that died before its cleanup
trap 'clean; e2e_cleanup' EXIT

must "create" ./qemu-img create -f hlfs hlfs:hdfs:///tmp/testenv/testfs 10G >/dev/null
out=$(must "info" ./qemu-img info -f hlfs hlfs:hdfs:///tmp/testenv/testfs)
grep -q '^virtual size: 10 GiB' <<<"$out" || fail "info: $out"

# raw.img: 4 MiB with a pattern, converted in as the guide does.
python3 - raw.img <<'PY'
import sys
with open(sys.argv[1], "wb") as f:
    for i in range(1024):
        f.write(bytes([(i * 7 + 1) % 251]) * 4096)
PY
must "convert" ./qemu-img convert raw.img hlfs:hdfs:///tmp/testenv/testfs >/dev/null
must "snapshot -c" ./qemu-img snapshot -c snapshot1 hlfs:hdfs:///tmp/testenv/testfs >/dev/null
out=$(must "snapshot -l" ./qemu-img snapshot -l hlfs:hdfs:///tmp/testenv/testfs)
grep -qw snapshot1 <<<"$out" || fail "snapshot -l does not list snapshot1: $out"
must "snapshot -d" ./qemu-img snapshot -d snapshot1 hlfs:hdfs:///tmp/testenv/testfs >/dev/null
out=$(must "snapshot -l" ./qemu-img snapshot -l hlfs:hdfs:///tmp/testenv/testfs)
grep -qw snapshot1 <<<"$out" && fail "snapshot1 still listed after -d: $out"

# The clone section of the guide: snapshot the base, create the new
# volume, then create -b VOL%snapshot1 into it.
must "snapshot -c again" ./qemu-img snapshot -c snapshot1 hlfs:hdfs:///tmp/testenv/testfs >/dev/null

must "create testfs2" ./qemu-img create -f hlfs hlfs:hdfs:///tmp/testenv/testfs2 10G >/dev/null
must "clone" ./qemu-img create -b hlfs:hdfs:///tmp/testenv/testfs%snapshot1 hlfs:hdfs:///tmp/testenv/testfs2 >/dev/null
# compare: the first 4 MiB equal raw.img, the rest of the 10 GiB reads zeros.
same() {
    local out
    out=$(must "compare $1" ./qemu-img compare raw.img "$1")
    grep -q 'Images are identical' <<<"$out" || fail "$1 does not read back raw.img: $out"
    log "ok: $1 reads back raw.img"
}
for v in "$FS" "$FS%snapshot1" "$FS2"; do same "$v"; done

# The standalone tools, with the seed's flags.
must "snapshot.hlfs" "$TOOLS/snapshot.hlfs" -u hdfs:///tmp/testenv/testfs -s snapshot2 >/dev/null
must "clone.hlfs" "$TOOLS/clone.hlfs" -f hdfs:///tmp/testenv/testfs%snapshot2 -s hdfs:///tmp/testenv/testfs3 >/dev/null
same hlfs:hdfs:///tmp/testenv/testfs3
must_fail "snapshot -d of a cloned snapshot" 'has clones' ./qemu-img snapshot -d snapshot1 hlfs:hdfs:///tmp/testenv/testfs
log "passed"
