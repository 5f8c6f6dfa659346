#!/usr/bin/env bash
# Runs without any HDFS: a NameNode that cannot be reached fails within the
# deadline (HLFS_HDFS_TIMEOUT) with an error naming its address, through the
# hlfs CLI (exit 1, not a hang) and through the patched qemu-img, which opens
# hlfs:hdfs://... URIs on the same code path as local ones. An hdfs:/// URI
# without a default filesystem names the missing setting.
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
e2e_init
qemu_init

export HLFS_HDFS_TIMEOUT=2
V=hlfs:hdfs://127.0.0.1:1/hlfs-e2e/vol

# timed WHAT MAX_SECS REGEX CMD...: CMD must fail within MAX_SECS, saying REGEX.
timed() {
    local what=$1 max=$2 re=$3 start secs
    shift 3
    start=$(date +%s%N)
    must_fail "$what" "$re" "$@"
    secs=$(( ($(date +%s%N) - start) / 1000000000 ))
    [ "$secs" -le "$max" ] || fail "$what: took ${secs}s, more than ${max}s (deadline 2s)"
}

timed "hlfs info, unreachable NameNode" 8 '127\.0\.0\.1:1.*unreachable' "$HLFS_CLI" info "$V"
rc=0; "$HLFS_CLI" create "$V" 1G 2>/dev/null || rc=$?
[ "$rc" = 1 ] || fail "hlfs create on an unreachable NameNode exited $rc, expected 1"
timed "qemu-img info, unreachable NameNode" 8 'NameNode 127\.0\.0\.1:1 is unreachable' qemu-img info "$V"
timed "qemu-img create, unreachable NameNode" 8 'NameNode 127\.0\.0\.1:1 is unreachable' qemu-img create -f hlfs "$V" 1G
timed "qemu-io, unreachable NameNode" 8 'NameNode 127\.0\.0\.1:1 is unreachable' qemu-io -c 'read 0 4k' "$V"

# hdfs:/// needs fs.defaultFS.
HADOOP_CONF_DIR=$E2E_WORK/no-conf HADOOP_HOME='' \
    timed "hlfs info hdfs:///, no default filesystem" 8 'fs\.defaultFS' "$HLFS_CLI" info hlfs:hdfs:///vms/x
mkdir -p "$E2E_WORK/conf"
cat >"$E2E_WORK/conf/core-site.xml" <<'XML'
<?xml version="1.0"?>
<configuration>
  <property><name>fs.defaultFS</name><value>hdfs://127.0.0.1:1</value></property>
</configuration>
XML
HADOOP_CONF_DIR=$E2E_WORK/conf \
    timed "qemu-img info hdfs:/// via HADOOP_CONF_DIR" 8 'NameNode 127\.0\.0\.1:1 is unreachable' qemu-img info hlfs:hdfs:///vms/x
log "passed"
