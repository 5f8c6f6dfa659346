#!/usr/bin/env bash
# End-to-end check of the hlfs storage pool backend against a private
# libvirtd (own config, socket dir, pid file and log in a temporary dir).
#
#   libvirt-pool/smoke.sh [PREFIX]     # PREFIX: from build.sh (default: run it)
#
# Needs root (libvirtd's system mode) and the hlfs CLI:
#   $HLFS_CLI, default <checkout>/target/release/hlfs (cargo build --release -p hlfs-cli)
# Each check states what it verifies; the first failure stops the run.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PREFIX=${1:-$("$HERE/build.sh" | tail -n1)}
HLFS=${HLFS_CLI:-$ROOT/target/release/hlfs}
[ -x "$HLFS" ] || { echo "no hlfs CLI at $HLFS" >&2; exit 1; }
[ -x "$PREFIX/sbin/libvirtd" ] || { echo "no libvirtd in $PREFIX" >&2; exit 1; }

T=$(mktemp -d /tmp/hlfs-libvirt-smoke.XXXXXX)
POOLDIR=$T/pool
POOL=hlfs-smoke-$$   # unique: pool configs persist in the prefix
# shellcheck source=../tests/lib/libvirtd.sh
. "$ROOT/tests/lib/libvirtd.sh"
cleanup() {
    set +e
    if [ -n "$LIBVIRTD_PID" ]; then
        $V pool-destroy $POOL >/dev/null 2>&1
        $V pool-undefine $POOL >/dev/null 2>&1
    fi
    [ "${KEEP:-0}" = 1 ] && echo "kept $T" >&2 || rm -rf "$T"
}
trap cleanup EXIT
# Chains its own stop after cleanup (HLFS_KEEP_WORK=1 keeps its log).
libvirtd_start "$PREFIX" "$HLFS" || exit 1
V="$PREFIX/bin/virsh -q -c $HLFS_LIBVIRT_URI"

pass() { printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*" >&2; tail -n 20 "$LIBVIRTD_LOG" >&2 || true; exit 1; }
expect_fail() {  # expect_fail DESC CMD...: CMD must fail
    local d=$1; shift
    if "$@" >"$T/err" 2>&1; then fail "$d (command succeeded)"; fi
    pass "$d: $(grep -m1 error "$T/err" | sed 's/^error: //')"
}
vcap() { $V vol-dumpxml --pool $POOL "$1" | sed -n "s|.*<capacity unit='bytes'>\([0-9]*\)</capacity>.*|\1|p"; }

cat >"$T/pool.xml" <<EOF
<pool type='hlfs'>
  <name>$POOL</name>
  <source>
    <name>local://$POOLDIR</name>
  </source>
</pool>
EOF
$V pool-define "$T/pool.xml" >/dev/null
$V pool-build $POOL >/dev/null
[ -d "$POOLDIR" ] || fail "pool-build creates the pool directory"
pass "pool-define + pool-build create $POOLDIR"
$V pool-start $POOL >/dev/null
$V pool-info $POOL | grep -e 'State: *running' >/dev/null || fail "pool-start"
$V pool-dumpxml $POOL | grep -e "<name>local://$POOLDIR</name>" >/dev/null || fail "pool-dumpxml source name"
cap=$($V pool-dumpxml $POOL | sed -n "s|.*<capacity unit='bytes'>\([0-9]*\)<.*|\1|p")
[ "$cap" -gt 0 ] || fail "pool capacity is the file system's size"
pass "pool-start; pool capacity $cap bytes (statvfs of the directory)"

# create
$V vol-create-as $POOL vm1 64M --format raw >/dev/null
"$HLFS" info --output json "local://$POOLDIR/vm1" | grep -e '"virtual_size": 67108864' >/dev/null ||
    fail "vol-create-as made a 64 MiB HLFS volume"
[ "$($V vol-path --pool $POOL vm1)" = "hlfs:local://$POOLDIR/vm1" ] || fail "vol-path is the hlfs: URI"
[ "$($V vol-key --pool $POOL vm1)" = "hlfs:local://$POOLDIR/vm1" ] || fail "vol-key is the hlfs: URI"
[ "$(vcap vm1)" = 67108864 ] || fail "vol-dumpxml capacity"
$V vol-list $POOL | grep -e "^ *vm1 *hlfs:local://$POOLDIR/vm1" >/dev/null || fail "vol-list shows vm1"
$V vol-info --pool $POOL vm1 | grep -e 'Type: *network' >/dev/null || fail "vol-info type network"
pass "vol-create-as: 64 MiB volume, key/path hlfs:local://$POOLDIR/vm1, vol-list/vol-info/vol-dumpxml agree"

# names are validated before anything runs
for bad in '../evil' 'a/b' 'a%b' 'a;touch x' '$(id)' '-rf' '.hidden' "$(printf 'a\tb')"; do
    expect_fail "refuses volume name '$bad'" $V vol-create-as --pool $POOL --name "$bad" --capacity 1M
done
[ "$(ls "$POOLDIR")" = vm1 ] || fail "nothing but vm1 in the pool directory"
[ ! -e "$T/../evil" ] || fail "no volume outside the pool"
pass "no stray files after the refused names"

# pool-refresh picks up volumes made outside libvirt, skips non-volumes
"$HLFS" create "local://$POOLDIR/ext" 1M
mkdir "$POOLDIR/not-a-volume"
$V pool-refresh $POOL >/dev/null
$V vol-list $POOL | grep -e '^ *ext ' >/dev/null || fail "pool-refresh lists a volume created by the CLI"
! $V vol-list $POOL | grep -e 'not-a-volume' >/dev/null || fail "pool-refresh skips a plain directory"
pass "pool-refresh lists CLI-created volume 'ext' and skips a plain directory"
rmdir "$POOLDIR/not-a-volume"

# resize (grow only)
$V vol-resize --pool $POOL vm1 128M >/dev/null
[ "$(vcap vm1)" = 134217728 ] || fail "vol-resize to 128M"
expect_fail "vol-resize refuses to shrink" $V vol-resize --pool $POOL vm1 64M --shrink
pass "vol-resize grows vm1 to 128 MiB"

# download: byte-exact (`hlfs export URI -` through a pipe)
head -c 3M /dev/urandom >"$T/data"
"$HLFS" import -n "$T/data" "local://$POOLDIR/vm1"
$V vol-download --pool $POOL vm1 "$T/down" >/dev/null
[ "$(stat -c %s "$T/down")" = 134217728 ] || fail "vol-download size"
cmp -n 3145728 "$T/data" "$T/down" || fail "vol-download returns the imported bytes"
{ cmp -i 3145728 "$T/down" /dev/zero 2>&1 || true; } | grep -e EOF >/dev/null || fail "rest of the download reads zeros"
pass "vol-download is byte-exact (3 MiB random + zeros, 128 MiB)"
expect_fail "vol-download of part of a volume is refused" $V vol-download --pool $POOL vm1 "$T/down-len" --length 1048576

# upload (`hlfs import -n - URI` through a pipe): round trip byte-exact
head -c 5M /dev/urandom >"$T/up"
"$HLFS" create "local://$POOLDIR/upl" 8M
$V pool-refresh $POOL >/dev/null
$V vol-upload --pool $POOL upl "$T/up" >/dev/null
$V vol-download --pool $POOL upl "$T/up-down" >/dev/null
[ "$(stat -c %s "$T/up-down")" = 8388608 ] || fail "download of the uploaded volume has its size"
cmp -n 5242880 "$T/up" "$T/up-down" || fail "vol-upload then vol-download returns the uploaded bytes"
{ cmp -i 5242880 "$T/up-down" /dev/zero 2>&1 || true; } | grep -e EOF >/dev/null || fail "after the upload the rest is zeros"
"$HLFS" export "local://$POOLDIR/upl" "$T/up-cli"
cmp "$T/up-down" "$T/up-cli" || fail "hlfs export agrees with vol-download"
pass "vol-upload of 5 MiB random data + vol-download round trip is byte-exact"
head -c 9M /dev/urandom >"$T/toobig"
expect_fail "vol-upload of more data than the volume holds fails" $V vol-upload --pool $POOL upl "$T/toobig"
grep -q "stream had I/O failure\\|stream helper" "$T/err" || fail "vol-upload reports the stream failure"
expect_fail "vol-upload at an offset is refused" $V vol-upload --pool $POOL upl "$T/up" --offset 512

# wipe: zero algorithm only; afterwards the volume reads zeros
expect_fail "vol-wipe --algorithm random is refused" $V vol-wipe --pool $POOL upl --algorithm random
grep -q "only support the 'zero' wipe algorithm" "$T/err" || fail "clear message for other wipe algorithms"
$V vol-wipe --pool $POOL upl >/dev/null
$V vol-download --pool $POOL upl "$T/wiped" >/dev/null
[ "$(stat -c %s "$T/wiped")" = 8388608 ] || fail "wiped volume keeps its size"
{ cmp "$T/wiped" /dev/zero 2>&1 || true; } | grep -e EOF >/dev/null || fail "vol-wipe makes the volume read zeros"
pass "vol-wipe (zero): the whole 8 MiB volume downloads as zeros"
$V vol-delete --pool $POOL upl >/dev/null

# clone: vol-clone takes a snapshot and clones it (O(1))
$V vol-clone --pool $POOL vm1 vm1-clone >/dev/null
"$HLFS" info --output json "local://$POOLDIR/vm1-clone" | grep -e "\"base\": \"local://$POOLDIR/vm1%libvirt-clone-" >/dev/null ||
    fail "vol-clone makes an HLFS clone of a libvirt-clone-* snapshot"
$V vol-download --pool $POOL vm1-clone "$T/down2" >/dev/null
cmp "$T/down" "$T/down2" || fail "the clone has the source's contents"
pass "vol-clone: HLFS clone of snapshot, same contents"

# a <backingStore> hlfs:URI%SNAP makes a clone
"$HLFS" snapshot create "local://$POOLDIR/vm1" golden
cat >"$T/vol.xml" <<EOF
<volume>
  <name>vm2</name>
  <capacity unit='M'>256</capacity>
  <target><format type='raw'/></target>
  <backingStore><path>hlfs:local://$POOLDIR/vm1%golden</path><format type='raw'/></backingStore>
</volume>
EOF
$V vol-create $POOL "$T/vol.xml" >/dev/null
"$HLFS" info --output json "local://$POOLDIR/vm2" | grep -e "\"base\": \"local://$POOLDIR/vm1%golden\"" >/dev/null ||
    fail "backingStore clone"
[ "$(vcap vm2)" = 268435456 ] || fail "backingStore clone has the requested size"
pass "vol-create with <backingStore> hlfs:...%golden clones that snapshot (256 MiB)"

# delete
expect_fail "vol-delete refuses a volume whose snapshots have clones" $V vol-delete --pool $POOL vm1
grep -q 'clones depend on its snapshots' "$T/err" || fail "clear message for vol-delete with clones"
$V vol-delete --pool $POOL vm1-clone >/dev/null
$V vol-delete --pool $POOL vm2 >/dev/null
$V vol-delete --pool $POOL vm1 >/dev/null
$V vol-delete --pool $POOL ext >/dev/null
[ -z "$(ls "$POOLDIR")" ] || fail "all volumes deleted"
[ -z "$($V vol-list $POOL)" ] || fail "vol-list empty"
pass "vol-delete removes clones, then the source"

$V pool-destroy $POOL >/dev/null
$V pool-delete $POOL >/dev/null
[ ! -e "$POOLDIR" ] || fail "pool-delete removes the empty directory"
$V pool-undefine $POOL >/dev/null
pass "pool-destroy, pool-delete, pool-undefine"
echo "all checks passed"
