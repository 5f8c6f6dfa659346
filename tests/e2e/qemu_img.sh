#!/usr/bin/env bash
# qemu-img round trips through the hlfs block driver keep every byte and
# report the volume truthfully: the seed guide's create/info/snapshot/convert/
# clone commands work as written; raw -> hlfs -> raw gives back identical
# data; info (text and JSON) shows format hlfs and the size; map reports
# never-written blocks as holes and written ones as data; a clone reads as
# its snapshot; info -U works while another process has the volume open
# read-write (and a second read-write open is refused); the guide's typos
# (hdfs:local:///..., %shopshot1) fail with a message naming the problem.
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
e2e_init
qemu_init

T=$E2E_WORK
V=hlfs:local://$T/testfs
V2=hlfs:local://$T/testfs2
GiB10=10737418240

# --- create and info (seed forms) ---------------------------------------------
must "create" qemu-img create -f hlfs "$V" 10G >/dev/null
info=$(must "info -f hlfs" qemu-img info -f hlfs "$V")
grep -q '^file format: hlfs$' <<<"$info" || fail "info: no 'file format: hlfs':
$info"
grep -q "^virtual size: 10 GiB ($GiB10 bytes)$" <<<"$info" || fail "info: wrong virtual size:
$info"
json=$(must "info --output json" qemu-img info --output json "$V")
python3 -c '
import json, sys
j = json.loads(sys.argv[1])
assert j["format"] == "hlfs", j
assert j["virtual-size"] == int(sys.argv[2]), j
assert j["cluster-size"] == 4096, j
assert not j.get("backing-filename"), j
' "$json" "$GiB10" || fail "info --output json: unexpected contents:
$json"

# --- snapshot -c / -l / -d (seed forms) -----------------------------------------
must "snapshot -c" qemu-img snapshot -c snapshot1 "$V" >/dev/null
list=$(must "snapshot -l" qemu-img snapshot -l "$V")
grep -Eq '^[0-9]+ +snapshot1 ' <<<"$list" || fail "snapshot -l does not list snapshot1:
$list"
must_fail "snapshot -c of an existing name" 'exist' qemu-img snapshot -c snapshot1 "$V"
must "snapshot -d" qemu-img snapshot -d snapshot1 "$V" >/dev/null
list=$(must "snapshot -l after -d" qemu-img snapshot -l "$V")
grep -q snapshot1 <<<"$list" && fail "snapshot1 still listed after -d:
$list"
must_fail "snapshot -d of a deleted snapshot" 'snapshot1' qemu-img snapshot -d snapshot1 "$V"

# --- convert raw -> hlfs into the existing, still empty volume -----------------
# raw.img: 64 MiB, random data in a few ranges (some not 4K-aligned), the
# rest never written, so the volume must keep those parts as holes.
python3 - "$T/raw.img" <<'EOF'
import os, sys
with open(sys.argv[1], "wb") as f:
    f.truncate(64 << 20)
    for off, n in [(0, 1 << 20), (8 << 20, 4096 + 512),
                   ((32 << 20) + 12800, 70144), ((64 << 20) - 4096, 4096)]:
        f.seek(off)
        f.write(os.urandom(n))
EOF
# A volume that was created and snapshotted is no longer "still empty" by the
# creation rules, so convert into a fresh one made the seed's way.
must "create for convert" qemu-img create -f hlfs "$V"c 10G >/dev/null
VC=${V}c
must "convert raw -> hlfs" qemu-img convert "$T/raw.img" "$VC" >/dev/null
out=$(must "compare raw vs hlfs" qemu-img compare "$T/raw.img" "$VC")
grep -q 'Images are identical' <<<"$out" || fail "compare raw vs hlfs: $out"
# The volume keeps its 10 GiB (the raw file is 64 MiB): compare checked that
# the extra 9.9 GiB read as zeros.
json=$(must "info after convert" qemu-img info --output json "$VC")
python3 -c 'import json,sys; assert json.loads(sys.argv[1])["virtual-size"] == int(sys.argv[2])' \
    "$json" "$GiB10" || fail "convert changed the volume size: $json"
# convert again without -n: the volume holds data now, so it must be refused.
must_fail "convert into a volume with data" 'already exists|holds data|-n' \
    qemu-img convert "$T/raw.img" "$VC"

# --- map: holes for never-written blocks, data for written ones -----------------
map=$(must "map" qemu-img map --output json "$VC")
python3 - "$map" <<'EOF' || fail "map --output json is wrong:
$map"
import json, sys
ext = json.loads(sys.argv[1])
def at(off):
    for e in ext:
        if e["start"] <= off < e["start"] + e["length"]:
            return e
    raise SystemExit(f"no extent covers {off}")
# map must tile the whole volume
pos = 0
for e in ext:
    assert e["start"] == pos, ("gap/overlap at", pos, e)
    pos += e["length"]
assert pos == 10 << 30, pos
data = [(0, 1 << 20), (8 << 20, 4096 + 512), ((32 << 20) + 12800, 70144),
        ((64 << 20) - 4096, 4096)]
for off, n in data:
    for o in range(off - off % 4096, off + n, 4096):
        e = at(o)
        assert e["data"] and not e["zero"], ("written block not data", o, e)
for o in [1 << 20, 4 << 20, (8 << 20) + 8192, 20 << 20, (32 << 20) + 90112,
          48 << 20, 64 << 20, 1 << 30, (10 << 30) - 4096]:
    e = at(o)
    assert not e["data"] and e["zero"], ("hole reported as data", o, e)
EOF

# --- convert hlfs -> raw ---------------------------------------------------------
must "convert hlfs -> raw" qemu-img convert -O raw "$VC" "$T/out.raw" >/dev/null
[ "$(stat -c %s "$T/out.raw")" = "$GiB10" ] || fail "out.raw is not 10 GiB"
cmp -n $((64 << 20)) "$T/raw.img" "$T/out.raw" || fail "hlfs -> raw changed the data"
out=$(must "compare hlfs vs its raw copy" qemu-img compare "$VC" "$T/out.raw")
grep -q 'Images are identical' <<<"$out" || fail "compare hlfs vs out.raw: $out"
# compare must be able to fail: flip one byte of the copy.
printf '\x5a' | dd of="$T/out.raw" bs=1 seek=$(((32 << 20) + 20000)) conv=notrunc status=none
must_fail "compare after changing one byte" 'differ|mismatch' qemu-img compare "$VC" "$T/out.raw"

# --- clone (seed form): create, then create -b VOL%SNAP into it -------------------
must "snapshot for clone" qemu-img snapshot -c snapshot1 "$VC" >/dev/null
must "create clone target" qemu-img create -f hlfs "$V2" 10G >/dev/null
must "clone via -b" qemu-img create -b "$VC%snapshot1" "$V2" >/dev/null
out=$(must "compare raw vs clone" qemu-img compare "$T/raw.img" "$V2")
grep -q 'Images are identical' <<<"$out" || fail "clone differs from raw: $out"
out=$(must "compare snapshot vs clone" qemu-img compare "$VC%snapshot1" "$V2")
grep -q 'Images are identical' <<<"$out" || fail "clone differs from its snapshot: $out"
# The base snapshot now has a clone: deleting it must be refused, not
# silently break the clone.
must_fail "snapshot -d of a snapshot with a clone" 'clone' qemu-img snapshot -d snapshot1 "$VC"
out=$(must "compare raw vs clone after refused delete" qemu-img compare "$T/raw.img" "$V2")
grep -q 'Images are identical' <<<"$out" || fail "clone changed: $out"

# --- info -U while qemu-io holds the volume read-write ---------------------------
# qemu-io runs interactively on a fifo; each command is sent alone and its
# output awaited (qemu-io's readline may sit on a second line that arrived
# in the same read).
mkfifo "$T/cmd"
qemu-io "$VC" <"$T/cmd" >"$T/qemu-io.out" 2>&1 &
E2E_PIDS+=($!)
exec 7>"$T/cmd"
sent=0
send() { # send CMD: waits until qemu-io prompts for the next command
    echo "$1" >&7
    sent=$((sent + 1))
    local _
    for _ in $(seq 100); do
        [ "$(grep -o 'qemu-io> ' "$T/qemu-io.out" | wc -l)" -gt $sent ] && return 0
        kill -0 "${E2E_PIDS[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    fail "qemu-io did not finish '$1':
$(cat "$T/qemu-io.out")"
}
send 'write -P 0x42 1048576 4096'
send 'flush'
grep -q 'wrote 4096/4096 bytes at offset 1048576' "$T/qemu-io.out" ||
    fail "qemu-io holding the volume could not write:
$(cat "$T/qemu-io.out")"
# A second read-write opener is refused with the holder's pid.
must_fail "second read-write open" "open read-write by pid ${E2E_PIDS[-1]}|locked" \
    qemu-io -c 'read 0 512' "$VC"
json=$(must "info -U while held" qemu-img info -U --output json "$VC")
python3 -c '
import json, sys
j = json.loads(sys.argv[1])
assert j["format"] == "hlfs" and j["virtual-size"] == int(sys.argv[2]), j
assert j["snapshots"][0]["name"] == "snapshot1", j
' "$json" "$GiB10" || fail "info -U while held: $json"
must "info -U text while held" qemu-img info -U "$VC" | grep '^file format: hlfs$' >/dev/null ||
    fail "info -U text while held lacks the format"
# The holder's flushed write is visible to a read-only opener.
qio "read-only read while held" -r -U "$VC" -- 'read -P 0x42 1048576 4096'
echo quit >&7
exec 7>&-
wait "${E2E_PIDS[-1]}" || fail "qemu-io holding the volume exited with an error:
$(cat "$T/qemu-io.out")"
unset 'E2E_PIDS[-1]'
qio "read-write open after the holder quit" "$VC" -- 'read -P 0x42 1048576 4096'

# --- the guide's typos -------------------------------------------------------------
must_fail "typo hdfs:local:///" 'hlfs:' qemu-img create -f hlfs "hdfs:local://$T/typo" 10G
must_fail "typo hdfs:local:/// (info)" 'hlfs:' qemu-img info "hdfs:local://$T/testfs"
must_fail "typo %shopshot1 (info)" 'shopshot1' qemu-img info "$VC%shopshot1"
must_fail "typo %shopshot1 (clone)" 'shopshot1' qemu-img create -b "$VC%shopshot1" "${V}3"
must_fail "typo %shopshot1 (boot snapshot via qemu-io)" 'no snapshot.*shopshot1' \
    qemu-io -r -c 'read 0 512' "$VC%shopshot1"
[ -e "$T/typo" ] && fail "the hdfs:local:/// typo created something at $T/typo"

# --- qemu-img check (hlfs fsck) and measure -----------------------------------------
CK=hlfs:local://$T/check
must "create for check" qemu-img create -f hlfs "$CK" 64M >/dev/null
qio "8 MiB of data and 1 MiB of zeroes" "$CK" -- 'write -P 0x5a 0 8M' 'write -z 8M 1M'
must "check (clean)" qemu-img check "$CK" | grep -q '^No errors were found on the image.$' ||
    fail "qemu-img check of a clean volume did not say so"
must "check -r all" qemu-img check -r all "$CK" | grep -q 'index .* was rebuilt from its log' ||
    fail "qemu-img check -r all did not rebuild the index"
qio "data after the index rebuild" -r "$CK" -- 'read -P 0x5a 0 8M' 'read -P 0 8M 1M'
m=$(must "measure" qemu-img measure --output json -O hlfs "$CK")
python3 -c '
import json, sys
m = json.loads(sys.argv[1])
req, full = m["required"], m["fully-allocated"]
# 8 MiB of data (zeroes are not stored) plus a little log overhead; full: 64 MiB and overhead.
assert 8 << 20 <= req <= 9 << 20, m
assert 64 << 20 <= full <= 66 << 20, m
' "$m" || fail "qemu-img measure: $m"
m=$(must "measure --size" qemu-img measure --output json -O hlfs --size 1G)
python3 -c '
import json, sys
m = json.loads(sys.argv[1])
assert m["required"] < 1 << 20 and 1 << 30 <= m["fully-allocated"] <= (1 << 30) * 1.02, m
' "$m" || fail "qemu-img measure --size 1G: $m"
# A damaged record: check finds it (exit 2, one corruption), and names it.
seg=$(find "$T/check" -name 'seg-*' -size +1M | sort | head -n1)
printf '\xff\xff\xff\xff' | dd of="$seg" bs=1 seek=300000 conv=notrunc status=none
rc=0
out=$(qemu-img check --output json "$CK" 2>"$T/check.err") || rc=$?
[ $rc = 2 ] || fail "qemu-img check of a damaged volume exited $rc, not 2: $out $(cat "$T/check.err")"
python3 -c 'import json, sys; assert json.loads(sys.argv[1])["corruptions"] >= 1' "$out" ||
    fail "qemu-img check counted no corruption: $out"
grep -q "error: segment $(basename "$seg")" "$T/check.err" ||
    fail "qemu-img check did not name the damaged segment: $(cat "$T/check.err")"
log "ok: qemu-img check finds the damaged record: $(head -c 200 "$T/check.err")"

# --- qemu-img info's format-specific part, and rebase -b '' (flatten) ----------------
IB=local://$T/ibase IC=hlfs:local://$T/iclone
must "create base" qemu-img create -f hlfs "hlfs:$IB" 16M >/dev/null
qio "write the base" "hlfs:$IB" -- 'write -P 0x61 0 2M'
must "snapshot base" qemu-img snapshot -c gold "hlfs:$IB" >/dev/null
must "clone" qemu-img create -f hlfs -b "hlfs:$IB%gold" "$IC" >/dev/null
qio "write the clone" "$IC" -- 'write -P 0x62 1M 4k'
j=$(must "info --output json (clone)" qemu-img info --output json "$IC")
python3 -c '
import json, sys
d = json.loads(sys.argv[1])["format-specific"]
assert d["type"] == "hlfs", d
d = d["data"]
assert d["base"] == sys.argv[2] and d["base-snapshot"] == "gold", d
assert d["log-bytes"] > 0 and d["live-bytes"] >= 4096 and d["head-bytes"] == 4096, d
' "$j" "$IB" || fail "qemu-img info --output json of a clone: $j"
t=$(must "info (clone)" qemu-img info "$IC")
grep -q '^Format specific information:' <<<"$t" && grep -q 'base snapshot: gold' <<<"$t" ||
    fail "qemu-img info of a clone shows no format-specific base:
$t"
must_fail "rebase onto another base" "base cannot be changed, only dropped" \
    qemu-img rebase -u -b "hlfs:$IB%gold" -F hlfs "$IC"
must "rebase -b '' (flatten)" qemu-img rebase -b '' "$IC" >/dev/null
j=$(must "info after rebase" qemu-img info --output json "$IC")
python3 -c '
import json, sys
d = json.loads(sys.argv[1])["format-specific"]["data"]
assert "base" not in d and "base-snapshot" not in d, d
' "$j" || fail "the clone still has a base after qemu-img rebase -b '': $j"
qio "the flattened clone reads the same" -r "$IC" -- 'read -P 0x61 0 1M' 'read -P 0x62 1M 4k' 'read -P 0x61 1052672 1044480'
must "the base snapshot can go now" qemu-img snapshot -d gold "hlfs:$IB" >/dev/null
qio "the flattened clone after its base snapshot went" -r "$IC" -- 'read -P 0x61 0 1M' 'read -P 0x62 1M 4k'
log "ok: info shows the clone's base and space; rebase -b '' flattened it"

log "passed"
