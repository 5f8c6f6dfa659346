#!/usr/bin/env bash
# libvirt sets an hlfs disk's tunables (libvirt-pool/patches/0009):
#  - <source protocol='hlfs' name=...><hlfs cleaner=... index-dir=.../></source>
#    defines, and dumpxml gives the element back;
#  - the QEMU command line (the domain's log) has them in the -blockdev JSON,
#    and QMP query-named-block-nodes shows them as the node's tunables;
#  - the engine applies index-dir: starting the (paused) domain puts the
#    volume's index in index-dir/<uuid>, not in the volume's own index/;
#  - bad values are refused at define time with a message naming the
#    attribute (a ratio below 1, a relative index-dir).
# Root only (libvirtd's system mode); exit 77 otherwise.
E2E_NAME=libvirt_tunables
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
[ "$(id -u)" = 0 ] || skip "libvirtd's system mode needs root"
command -v python3 >/dev/null || skip "no python3"
e2e_init
qemu_init
t0=$(date +%s)
T=$E2E_WORK
# shellcheck source=../lib/libvirt-e2e.sh
. "$HLFS_ROOT/tests/lib/libvirt-e2e.sh"

libvirt_prefix

D=ht-$(($$ % 10000)) # short: QEMU's monitor socket path has at most 107 bytes
dom_cleanup() {
    set +e
    libvirt_drop "$D"
    e2e_cleanup
}
libvirt_start dom_cleanup

VOL=local://$T/vol
must "create the volume" "$HLFS_CLI" create "$VOL" 64M >/dev/null

# domain_xml HLFS-ELEMENT: a diskless-boot domain with one hlfs disk
domain_xml() {
    cat <<EOF
<domain type='qemu'>
  <name>$D</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>$QEMU_BIN/qemu-system-x86_64</emulator>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='hlfs' name='$VOL'>
        $1
      </source>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

# --- refused at define time ------------------------------------------------------
for bad in "cleaner-ratio='0.5'|cleaner-ratio" "index-dir='rel/idx'|index-dir" "cleaner='maybe'|cleaner"; do
    domain_xml "<hlfs ${bad%%|*}/>" >"$T/bad.xml"
    if out=$(V define "$T/bad.xml" 2>&1); then
        fail "define with <hlfs ${bad%%|*}/> succeeded"
    fi
    grep -F "attribute '${bad##*|}' of <hlfs>" <<<"$out" >/dev/null ||
        fail "define with <hlfs ${bad%%|*}/> failed without naming the attribute: $out"
    log "ok: refused: $(grep -o 'error: .*' <<<"$out" | tail -n1 | cut -c1-200)"
done

# --- define, dumpxml, start --------------------------------------------------------
TUN="<hlfs cleaner='on' cleaner-ratio='1.25' cleaner-min-dead='67108864' cleaner-rate='8388608' index-dir='$T/idx' hdfs-timeout='7.5' map-memory='33554432'/>"
domain_xml "$TUN" >"$T/dom.xml"
V define "$T/dom.xml" >/dev/null || vfail "define"
V dumpxml "$D" | grep -F "$TUN" >/dev/null ||
    fail "dumpxml does not give <hlfs> back: $(V dumpxml "$D" | grep -A3 '<source')"
log "ok: define + dumpxml keep $TUN"

V start "$D" --paused >/dev/null || vfail "virsh start --paused"
cmd=$(grep -a -- '-blockdev' "$(libvirtd_var_dir)/log/libvirt/qemu/$D.log" | tail -n1)
for kv in '"cleaner":true' '"cleaner-ratio":1.250000' '"cleaner-min-dead":67108864' \
          '"cleaner-rate":8388608' "\"index-dir\":\"$T/idx\"" '"hdfs-timeout":7.500000' \
          '"map-memory":33554432'; do
    grep -F -- "$kv" <<<"$cmd" >/dev/null || fail "the QEMU command line lacks $kv: $cmd"
done
log "ok: QEMU's -blockdev: $(grep -o "{\"driver\":\"hlfs\"[^']*" <<<"$cmd" | head -n1)"

nodes=$(V qemu-monitor-command "$D" '{"execute":"query-named-block-nodes"}') ||
    vfail "query-named-block-nodes"
python3 - "$nodes" "$T/idx" <<'EOF' || fail "query-named-block-nodes does not show the tunables: $nodes"
import json, sys
nodes = json.loads(sys.argv[1])["return"]
t = [n for n in nodes if n["drv"] == "hlfs"][0]["image"]["format-specific"]["data"]["tunables"]
want = {"cleaner": True, "cleaner-ratio": 1.25, "cleaner-min-dead": 67108864,
        "cleaner-rate": 8388608, "index-dir": sys.argv[2], "hdfs-timeout": 7.5,
        "map-memory": 33554432}
assert t == want, (t, want)
EOF
log "ok: query-named-block-nodes shows the tunables"

n=$(find "$T/idx" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)
[ "$n" = 1 ] || fail "index-dir $T/idx holds $n directories, expected the volume's <uuid>"
[ ! -e "$T/vol/index" ] || fail "the volume's own index/ exists although index-dir was given"
log "ok: the engine put the index in index-dir/<uuid>"
V destroy "$D" >/dev/null || vfail "destroy"
log "passed in $(($(date +%s) - t0))s"
