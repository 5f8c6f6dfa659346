#!/usr/bin/env bash
# The guest boot scenario of tests/e2e/guest_boot.sh with every volume on
# the real HDFS named by HLFS_TEST_HDFS (skipped without it; scripts/test.sh
# starts a MiniDFSCluster from tests/hdfs and sets it): the guest boots from
# an HDFS volume, from its %snapshot, from an HDFS clone of an HDFS snapshot
# and from an HDFS clone of a local base, through virtio and IDE, and each
# boot's writes are checked on the console and offline.
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
[ -n "${HLFS_TEST_HDFS:-}" ] || skip "HLFS_TEST_HDFS is not set (hdfs://host:port/dir of a test cluster; see docs/hdfs.md)"
HLFS_GUEST_BOOT_ROOT=${HLFS_TEST_HDFS%/}/guest-$$-$RANDOM exec bash "$(dirname "$0")/guest_boot.sh"
