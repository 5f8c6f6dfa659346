#!/usr/bin/env bash
# The hlfs storage pool in our patched libvirt 11.3.0, driven through virsh
# against a private libvirtd: pool define/build/start/refresh/info, volume
# create/list/info/dumpxml/resize/download/clone/delete, unsafe names refused
# with nothing created (see libvirt-pool/smoke.sh for each check).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
    echo "skipped: libvirtd's system mode needs root" >&2
    exit 77
fi
export HLFS_CLI=${CARGO_TARGET_DIR:-$root/target}/release/hlfs
prefix=$("$root/libvirt-pool/build.sh" | tail -n1)
"$root/libvirt-pool/smoke.sh" "$prefix"
