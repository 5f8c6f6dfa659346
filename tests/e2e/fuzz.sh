#!/usr/bin/env bash
# A short cargo-fuzz run of every target in engine/fuzz (record/segment
# parser, checkpoint decoding, index/state values, URI/name/size parsing,
# volume operations against a Vec<u8> model), starting from the committed
# corpora. New inputs go to a temporary directory, so the checkout stays
# clean; a crash fails the test and leaves its input in engine/fuzz/artifacts.
#
#   HLFS_FUZZ_SECONDS   seconds per target (default 20)
#
# cargo-fuzz needs nightly-only flags (-Zsanitizer); RUSTC_BOOTSTRAP=1 lets
# the stable toolchain accept them.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/common.sh"
need_cargo
secs=${HLFS_FUZZ_SECONDS:-20}
export RUSTC_BOOTSTRAP=1
target_dir=${HLFS_FUZZ_TARGET_DIR:-$HLFS_CACHE/target-fuzz}
mkdir -p "$target_dir"

if ! cargo fuzz --version >/dev/null 2>&1; then
    step "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2 >&2
fi

cd "$root/engine"
step "building fuzz targets"
cargo fuzz build -O --target-dir "$target_dir" >&2

tmp=$(mktemp -d /tmp/hlfs-fuzz.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
rc=0
for t in $(cargo fuzz list); do
    mkdir -p "$tmp/$t"
    log=$tmp/$t.log
    if cargo fuzz run -O --target-dir "$target_dir" "$t" "$tmp/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -max_len=65536 -rss_limit_mb=4096 >"$log" 2>&1; then
        echo "ok   $t: $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n1)"
    else
        echo "FAIL $t" >&2
        grep -E -A12 "panicked|ERROR: libFuzzer|SUMMARY" "$log" | head -n 40 >&2
        rc=1
    fi
done
exit $rc
