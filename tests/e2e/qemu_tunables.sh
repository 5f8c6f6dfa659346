#!/usr/bin/env bash
# The driver's tunables are QAPI options of BlockdevOptionsHlfs (HlfsTunables)
# and reach libhlfs (hlfs_open_opts):
#  - qemu-system-x86_64 -blockdev driver=hlfs,uri=...,index-dir=...,cleaner-*:
#    QMP query-named-block-nodes shows them under format-specific.tunables,
#    and the engine applies index-dir (the index lands in DIR/<uuid>, not in
#    the volume's own index/);
#  - qemu-img info with a json: filename and with --image-opts takes them;
#  - a bad value fails with an error naming the option: a ratio below 1
#    (libhlfs's range), a non-number (QAPI's type), a relative index-dir, an
#    unknown option.
E2E_NAME=qemu_tunables
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
e2e_init
qemu_init
command -v python3 >/dev/null || skip "no python3 for QMP"
t0=$(date +%s)
T=$E2E_WORK
V=local://$T/vol
QMP="python3 $HLFS_ROOT/tests/lib/qmp.py $T/qmp.sock"

must "create" qemu-img create -f hlfs "hlfs:$V" 64M >/dev/null

# --- -blockdev with tunables, QMP ---------------------------------------------
"$QEMU_BIN/qemu-system-x86_64" -machine none -display none -nodefaults -monitor none \
    -qmp "unix:$T/qmp.sock,server=on,wait=off" \
    -blockdev "driver=hlfs,uri=$V,node-name=d0,cleaner=on,cleaner-ratio=1.25,cleaner-min-dead=64M,cleaner-rate=8M,cleaner-interval=2.5,index-dir=$T/idx,hdfs-timeout=7,map-memory=32M" \
    </dev/null >"$T/qemu.err" 2>&1 &
QPID=$!
E2E_PIDS+=("$QPID")
for _ in $(seq 100); do
    [ -S "$T/qmp.sock" ] && break
    kill -0 "$QPID" 2>/dev/null || fail "QEMU exited: $(cat "$T/qemu.err")"
    sleep 0.2
done
nodes=$($QMP query-named-block-nodes) || fail "query-named-block-nodes failed: $nodes"
python3 - "$nodes" "$T/idx" <<'EOF' || fail "query-named-block-nodes does not show the tunables: $nodes"
import json, sys
nodes = json.loads(sys.argv[1])
t = [n for n in nodes if n["node-name"] == "d0"][0]["image"]["format-specific"]["data"]["tunables"]
want = {"cleaner": True, "cleaner-ratio": 1.25, "cleaner-min-dead": 64 << 20,
        "cleaner-rate": 8 << 20, "cleaner-interval": 2.5, "index-dir": sys.argv[2],
        "hdfs-timeout": 7, "map-memory": 32 << 20}
assert t == want, (t, want)
EOF
log "ok: query-named-block-nodes shows the tunables of -blockdev"
$QMP quit >/dev/null 2>&1 || true
wait "$QPID" || true
n=$(find "$T/idx" -mindepth 1 -maxdepth 1 -type d | wc -l)
[ "$n" = 1 ] || fail "index-dir $T/idx holds $n directories, expected the volume's <uuid>"
[ ! -e "$T/vol/index" ] || fail "the volume's own index/ exists although index-dir was given"
log "ok: the index went to index-dir/<uuid> ($(basename "$(find "$T/idx" -mindepth 1 -maxdepth 1 -type d)"))"

# --- qemu-img: json: and --image-opts -------------------------------------------
out=$(must "info json:" qemu-img info --output json \
    "json:{\"driver\":\"hlfs\",\"uri\":\"$V\",\"map-memory\":67108864,\"cleaner\":false}")
python3 -c '
import json, sys
t = json.loads(sys.argv[1])["format-specific"]["data"]["tunables"]
assert t == {"map-memory": 67108864, "cleaner": False}, t' "$out" ||
    fail "qemu-img info json: does not show the tunables: $out"
must "info --image-opts" qemu-img info --image-opts "driver=hlfs,uri=$V,hdfs-timeout=0.5,index-dir=$T/idx2" |
    grep -F "index dir: $T/idx2" >/dev/null || fail "qemu-img info --image-opts does not list index-dir"
log "ok: qemu-img info takes tunables in json: and --image-opts"

# --- bad values name the option ---------------------------------------------------
must_fail "ratio below 1" "hlfs option cleaner-ratio: '0.5'" \
    qemu-img info "json:{\"driver\":\"hlfs\",\"uri\":\"$V\",\"cleaner-ratio\":0.5}"
must_fail "not a number" "cleaner-ratio.*number" \
    qemu-img info --image-opts "driver=hlfs,uri=$V,cleaner-ratio=lots"
must_fail "relative index-dir" "index-dir: 'rel/dir' is not an absolute path" \
    qemu-img info --image-opts "driver=hlfs,uri=$V,index-dir=rel/dir"
must_fail "unknown option" "cleaner-budget" \
    qemu-img info --image-opts "driver=hlfs,uri=$V,cleaner-budget=1"
must_fail "-blockdev with a zero rate" "hlfs option cleaner-rate: '0'" \
    "$QEMU_BIN/qemu-system-x86_64" -machine none -display none -nodefaults -monitor none \
    -blockdev "driver=hlfs,uri=$V,node-name=d0,cleaner-rate=0"
log "passed in $(($(date +%s) - t0))s"
