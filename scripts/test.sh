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

step "building (release)"
cargo build --workspace --release --all-targets || exit 1
link_seed_tools "${CARGO_TARGET_DIR:-$root/target}/release"

step "cargo test"
log=$(mktemp)
cargo test --workspace --release --no-fail-fast 2>&1 | tee "$log"
cargo_rc=${PIPESTATUS[0]}
read -r passed failed ignored < <(grep -E '^test result:' "$log" |
    sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/' |
    awk '{p+=$1; f+=$2; i+=$3} END {print p+0, f+0, i+0}')
rm -f "$log"
if [ "$cargo_rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1 # a crate failed to build or a test binary crashed
fi
skipped=$ignored

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
