#!/usr/bin/env bash
# The C ABI (libhlfs.so + hlfs.h) works from C: threads, snapshots, clones, errors.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}/release
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
gcc -O1 -Wall -Werror -pthread -I"$root/engine/include" "$root/tests/c-abi/abi_test.c" \
    -L"$target" -Wl,-rpath,"$target" -lhlfs -o "$work/abi_test"
"$work/abi_test" "$work"
