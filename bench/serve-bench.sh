#!/usr/bin/env bash
# The exports of `hlfs serve` against the in-QEMU hlfs driver (issue 16), in
# one run, for the same workloads:
#   qemu   the patched QEMU opens the image itself (-drive file=hlfs:...,
#          file=X.raw, ...; qemu-img bench on the image name)
#   nbd    `hlfs serve --nbd unix:SOCK` (qemu-storage-daemon of the same
#          patched build); the client attaches nbd+unix:///NAME?socket=SOCK
#   vub    `hlfs serve --vhost-user-blk SOCK`; the guest's QEMU attaches a
#          vhost-user-blk-pci device (guest part only: qemu-img has no
#          vhost-user client in this build)
# with raw (and, host part, qcow2) files through the same three paths as
# references: the same qemu-storage-daemon serves them with the arguments
# `hlfs serve` builds for a volume (the format node over a file node,
# cache.direct=on, discard=unmap), so a served/qemu ratio of raw shows what
# the path costs by itself, and hlfs/raw on one path what hlfs costs on it.
#
# Two parts, each RUNS rounds; in every round each workload runs every
# format on every path back to back, so they all see the same machine:
#   host   qemu-img bench (patched build) at QD32, -t none on the client and
#          cache.direct=on in the daemon: 4K scattered overwrite of a filled
#          image, 4K scattered read, 1M sequential write into a fresh image,
#          1M sequential read
#   guest  the test guest (tests/guest/, its static fio) under the patched
#          qemu-system-x86_64 for all three paths (the same binary, so like
#          is compared with like), one boot per round with every format on
#          every path attached at once, each on its own freshly filled image
#          (data disk i at PCI slot 6+i = /dev/vd(b+i); the boot disk, a raw
#          copy, at slot 5 = /dev/vda); fio direct=1, libaio, QD32,
#          FIO_RUNTIME s per job: 4K random read, 1M sequential read, 4K
#          random write, 1M sequential write, each on all disks back to back
#          (starting with another disk every round). Every path has the same
#          shared memfd guest memory (vhost-user needs it) and the kernel is
#          booted with -kernel (SeaBIOS cannot use vhost-user under TCG).
# Every image is opened with O_DIRECT on the host (cache=none / -t none /
# cache.direct=on) and dropped from the page cache before each run; after
# it, fincore shows how much of it sits in the page cache (~0 = bypassed).
# No path adds flushes: neither qemu-img bench nor fio asks for any, and the
# final flush on close is outside the timed part. After each boot every data
# image must hold what the guest wrote to it: fio's writes at offset 0, and
# a byte of its own in its last 4 KiB, written last through /dev/vd(b+i)
# (disk i is IMAGE_MIB + i MiB), so results cannot be put on the wrong path.
#
# Prints per-run numbers, medians, the ratios served/qemu per format and
# hlfs/raw per path, the accelerator and the load. Results and their
# discussion: docs/benchmarks.md, "Exports of hlfs serve against the in-QEMU
# driver". A benchmark, not a test: it fails only if a tool fails.
#
# Usage: bench/serve-bench.sh            (after cargo build --release; root
#                                         for the guest image build)
# Env:   RUNS=5                 rounds; medians over these
#        PARTS="host guest"     which parts to run
#        IMAGE_MIB=256          size of every image (a power of two)
#        RAND_COUNT=16384       4 KiB requests per qemu-img bench scattered run
#        SEQ_COUNT=256          1 MiB requests per qemu-img bench sequential run
#        DEPTH=32               requests in flight (qemu-img bench -d, fio iodepth)
#        FIO_RUNTIME=4          seconds per fio job in the guest
#        HOST_FORMATS="raw qcow2 hlfs"   formats of the host part
#        GUEST_FORMATS="raw hlfs"        formats of the guest part
#        HLFS_BENCH_DIR=/tmp    where the images go (needs ~7 x IMAGE_MIB)
#        HLFS_QEMU_BIN=DIR      patched QEMU binaries to use with this checkout's
#                               libhlfs.so (LD_LIBRARY_PATH) instead of qemu-patch/build.sh
# A full run (defaults) takes ~13 min on this 2-core machine under TCG (load 5-11).
if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
    sed -n '2,/^# A full run/p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
[ $# = 0 ] || { echo "serve-bench.sh takes no arguments (settings are environment variables; see --help)" >&2; exit 2; }
E2E_NAME=serve-bench
# shellcheck source=../tests/lib/qemu.sh
. "$(dirname "$0")/../tests/lib/qemu.sh"

RUNS=${RUNS:-5}
PARTS=${PARTS:-host guest}
IMAGE_MIB=${IMAGE_MIB:-256}
RAND_COUNT=${RAND_COUNT:-16384}
SEQ_COUNT=${SEQ_COUNT:-256}
DEPTH=${DEPTH:-32}
FIO_RUNTIME=${FIO_RUNTIME:-4}
read -r -a HOST_FORMATS <<<"${HOST_FORMATS:-raw qcow2 hlfs}"
read -r -a GUEST_FORMATS <<<"${GUEST_FORMATS:-raw hlfs}"
for v in RUNS IMAGE_MIB RAND_COUNT SEQ_COUNT DEPTH FIO_RUNTIME; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || fail "$v must be a positive number, not '${!v}'"
done
for f in "${HOST_FORMATS[@]}" "${GUEST_FORMATS[@]}"; do
    case $f in raw | qcow2 | hlfs) ;; *) fail "unknown format '$f' in HOST_FORMATS/GUEST_FORMATS (raw, qcow2, hlfs)" ;; esac
done
for p in $PARTS; do
    case $p in host | guest) ;; *) fail "PARTS: unknown part '$p' (host, guest)" ;; esac
done
BLOCKS=$((IMAGE_MIB * 256))
[ $((BLOCKS & (BLOCKS - 1))) = 0 ] || fail "IMAGE_MIB must be a power of two"
[ "$RAND_COUNT" -le "$BLOCKS" ] || fail "RAND_COUNT must not exceed the image's 4 KiB blocks ($BLOCKS)"
[[ " $PARTS " != *" host "* ]] || [ "$SEQ_COUNT" -le "$IMAGE_MIB" ] || fail "SEQ_COUNT must not exceed IMAGE_MIB"
command -v fincore >/dev/null || fail "no fincore (util-linux) to measure the page cache"
STEP=$((65521 * 4096)) # a prime number of blocks: a permutation of a power-of-two image
T0=$(date +%s)

TMPDIR=${HLFS_BENCH_DIR:-/tmp} e2e_init
if [ -n "${HLFS_QEMU_BIN:-}" ]; then
    [ -x "$HLFS_QEMU_BIN/qemu-img" ] || fail "HLFS_QEMU_BIN=$HLFS_QEMU_BIN has no qemu-img"
    export QEMU_BIN=$HLFS_QEMU_BIN PATH="$HLFS_QEMU_BIN:$PATH"
    export LD_LIBRARY_PATH="$HLFS_TARGET${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" # before their RUNPATH
else
    qemu_init
fi
D=$E2E_WORK
QSD=$QEMU_BIN/qemu-storage-daemon
[ -x "$QSD" ] || fail "no $QSD: the patched build lacks qemu-storage-daemon (rebuild with qemu-patch/build.sh)"
export HLFS_QEMU_STORAGE_DAEMON=$QSD # hlfs serve runs this very binary
ACCEL=$(guest_accel)

image() { # image FMT NAME -> the name qemu opens
    case $1 in
        raw) echo "$D/$2.raw" ;;
        qcow2) echo "$D/$2.qcow2" ;;
        hlfs) echo "hlfs:local://$D/$2" ;;
    esac
}
fmt_args() { # image FMT NAME -> -f for raw and qcow2 (an hlfs: name implies its format)
    case $1 in raw | qcow2) echo "-f $1" ;; esac
}
remove() {
    case $1 in
        raw | qcow2) rm -f "$(image "$1" "$2")" ;;
        hlfs) rm -rf "${D:?}/$2" ;;
    esac
}
create() { # create FMT NAME [MIB]: a fresh, empty image (IMAGE_MIB by default)
    remove "$1" "$2"
    # shellcheck disable=SC2046
    qemu-img create -q $(fmt_args "$1") "$(image "$1" "$2")" "${3:-$IMAGE_MIB}M" || fail "qemu-img create $1 failed"
}
fill() { # fill FMT NAME [MIB]: every block written once (1 MiB writes, pattern 0x3c; not timed)
    local out
    # shellcheck disable=SC2046
    out=$(qemu-img bench $(fmt_args "$1") -t writeback -d "$DEPTH" -w -s 1M -S 1M -c "${3:-$IMAGE_MIB}" \
        --pattern=0x3c "$(image "$1" "$2")" 2>&1) || fail "filling $1 $2 failed:
$out"
}
files() { # the image's files, one a line (hlfs: its segment files, where its data lives)
    case $1 in
        raw | qcow2) image "$1" "$2" ;;
        hlfs) find "$D/$2" -maxdepth 1 -type f -name 'seg-*' ;;
    esac
}
drop_cache() { # evict the image's (clean) pages: posix_fadvise DONTNEED, this file only
    local file
    sync
    while IFS= read -r file; do
        dd if="$file" iflag=nocache count=0 status=none
    done < <(files "$1" "$2")
}
cached() { # bytes of the image in the page cache (fincore RES)
    local paths=()
    mapfile -t paths < <(files "$1" "$2")
    fincore --bytes --noheadings --output RES "${paths[@]}" | awk '{ s += $1 } END { printf "%d\n", s }'
}

# serve FMT NAME nbd|vub SOCK: starts the export (daemonized), sets SERVER.
# hlfs: `hlfs serve` itself; raw/qcow2: the same daemon with the arguments
# hlfs serve builds for a volume (cli/src/serve.rs daemon_args).
SERVER=""
serve() {
    local f=$1 name=$2 kind=$3 sock=$4 pidf=$D/serve.pid args=()
    rm -f "$pidf" "$sock"
    if [ "$f" = hlfs ]; then
        case $kind in
            nbd) args=(--nbd "unix:$sock" --name "$name") ;;
            vub) args=(--vhost-user-blk "$sock") ;;
        esac
        "$HLFS_CLI" serve "local://$D/$name" "${args[@]}" --cache none --daemonize --pid-file "$pidf" \
            >/dev/null 2>"$D/serve.err" || fail "hlfs serve $kind failed: $(cat "$D/serve.err")"
    else
        local file=$D/$name.$f
        args=(--blockdev "driver=file,node-name=file0,filename=${file//,/,,},cache.direct=on,discard=unmap"
            --blockdev "driver=$f,node-name=img0,file=file0,read-only=off,cache.direct=on,discard=unmap")
        case $kind in
            nbd) args+=(--nbd-server "addr.type=unix,addr.path=${sock//,/,,}"
                --export "type=nbd,id=nbd0,node-name=img0,name=$name,writable=on") ;;
            vub) args+=(--export "type=vhost-user-blk,id=vub0,node-name=img0,addr.type=unix,addr.path=${sock//,/,,},writable=on,num-queues=1") ;;
        esac
        "$QSD" "${args[@]}" --pidfile "$pidf" --daemonize >/dev/null 2>"$D/serve.err" ||
            fail "qemu-storage-daemon ($f, $kind) failed: $(cat "$D/serve.err")"
    fi
    SERVER=$(cat "$pidf")
    E2E_PIDS+=("$SERVER")
}
# stop: SIGTERM, then wait until the daemon is gone (it daemonized, so it is
# not our child; a zombie without threads counts as gone).
stop() {
    [ -n "$SERVER" ] || return 0
    kill -TERM "$SERVER"
    pid_gone "$SERVER" 30 || fail "the export daemon (pid $SERVER) did not exit on SIGTERM within 30 s"
    SERVER=""
}

RES=$D/results.tsv # part row fmt path round value cached_bytes
: >"$RES"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "dir $D ($(findmnt -no FSTYPE -T "$D")), ${IMAGE_MIB} MiB images, $RUNS rounds, depth $DEPTH, accel $ACCEL, parts: $PARTS"
log "load at start: $LOAD_START"

# --- host part: qemu-img bench -------------------------------------------------
# hostrow KEY IMAGE SIZE COUNT ARGS...: IMAGE fresh (created empty per run),
# overwrite (created and filled per run) or filled (filled once, only read).
HROWS=()
declare -A H_IMAGE H_SIZE H_COUNT H_ARGS
hostrow() {
    local k=$1
    HROWS+=("$k")
    H_IMAGE[$k]=$2 H_SIZE[$k]=$3 H_COUNT[$k]=$4
    shift 4
    H_ARGS[$k]="$*"
}
hostrow h-4kw overwrite 4k "$RAND_COUNT" -w -S "$STEP"
hostrow h-4kr filled 4k "$RAND_COUNT" -S "$STEP"
hostrow h-1mw fresh 1M "$SEQ_COUNT" -w -S 1M
hostrow h-1mr filled 1M "$SEQ_COUNT" -S 1M

# hbench FMT NAME PATH ARGS...: one qemu-img bench run, prints its timed seconds.
hbench() {
    local f=$1 name=$2 path=$3 target out secs fa
    shift 3
    drop_cache "$f" "$name"
    if [ "$path" = nbd ]; then
        serve "$f" "$name" nbd "$D/h.sock"
        target="nbd+unix:///$name?socket=$D/h.sock"
        fa=(-f raw)
    else
        target=$(image "$f" "$name")
        read -r -a fa <<<"$(fmt_args "$f")"
    fi
    out=$(qemu-img bench "${fa[@]}" -t none -d "$DEPTH" "$@" "$target" 2>&1) ||
        fail "qemu-img bench $f via $path ($*) failed:
$out"
    stop
    secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
    [ -n "$secs" ] || fail "no 'Run completed' line from qemu-img bench:
$out"
    echo "$secs"
}

if [[ " $PARTS " = *" host "* ]]; then
    for f in "${HOST_FORMATS[@]}"; do
        create "$f" hfill
        fill "$f" hfill
    done
    for r in $(seq "$RUNS"); do
        for k in "${HROWS[@]}"; do
            for f in "${HOST_FORMATS[@]}"; do
                for p in qemu nbd; do
                    case ${H_IMAGE[$k]} in
                        fresh) name=hw; create "$f" hw ;;
                        overwrite) name=hw; create "$f" hw; fill "$f" hw ;;
                        filled) name=hfill ;;
                    esac
                    extra=()
                    if [[ " ${H_ARGS[$k]} " = *" -w "* ]]; then
                        extra=(--pattern=0xa5)
                    elif [ "${H_SIZE[$k]}" = 4k ]; then
                        extra=(-o $(((r * 7919 % BLOCKS) * 4096))) # reads start elsewhere each round
                    fi
                    # shellcheck disable=SC2086 # H_ARGS is a list of words
                    s=$(hbench "$f" "$name" "$p" -s "${H_SIZE[$k]}" -c "${H_COUNT[$k]}" ${H_ARGS[$k]} "${extra[@]}")
                    n=${H_COUNT[$k]}
                    printf 'host\t%s\t%s\t%s\t%s\t%s\t%s\n' "$k" "$f" "$p" "$r" \
                        "$(awk "BEGIN { printf \"%.3f\", $n / $s }")" "$(cached "$f" "$name")" >>"$RES"
                    if [ "$name" = hw ]; then remove "$f" hw; fi
                done
            done
        done
        log "host round $r/$RUNS done ($(($(date +%s) - T0)) s, load $(cut -d' ' -f1 /proc/loadavg))"
    done
    for f in "${HOST_FORMATS[@]}"; do remove "$f" hfill; done
fi

# --- guest part: fio in the test guest -------------------------------------------
# One boot per round. The guest has every format on every path at once, each
# on its own freshly filled image: data disk i (IMAGE_MIB + i MiB) at PCI
# slot 6+i, so /dev/vd(b+i) (the boot disk is at slot 5, /dev/vda). Each workload runs on all of them
# back to back, starting with a different disk every round.
if [[ " $PARTS " = *" guest "* ]]; then
    "$HLFS_ROOT/tests/guest/build-guest.sh" >"$D/build-guest.out" 2>"$D/build-guest.err" ||
        fail "tests/guest/build-guest.sh failed: $(tail -n 20 "$D/build-guest.err")"
    GUEST_DISK=$(sed -n 's/^DISK=//p' "$D/build-guest.out")
    [ -f "$GUEST_DISK" ] || fail "no guest disk from tests/guest/build-guest.sh"
    # run-guest.sh -k boots this command line; no_timer_check added, as the
    # kernel's IO-APIC timer check panics a TCG guest whose host is busy
    # (the last -append wins).
    APPEND="$(sed -n 's/^CMDLINE=//p' "$D/build-guest.out") no_timer_check"
    COMMON="direct=1,ioengine=libaio,iodepth=$DEPTH,time_based=1,runtime=$FIO_RUNTIME"
    declare -A GJOB=(
        [g-4kr]="rw=randread,bs=4k,norandommap=1,randrepeat=0"
        [g-1mr]="rw=read,bs=1M"
        [g-4kw]="rw=randwrite,bs=4k,norandommap=1,randrepeat=0"
        [g-1mw]="rw=write,bs=1M"
    )
    GROWS=(g-4kr g-1mr g-4kw g-1mw) # reads of the filled images first
    DISKS=() # "FMT PATH"
    for f in "${GUEST_FORMATS[@]}"; do
        for p in qemu nbd vub; do DISKS+=("$f $p"); done
    done
    ND=${#DISKS[@]}
    LETTERS=(b c d e f g h i j k l m n o p)
    [ "$ND" -le ${#LETTERS[@]} ] || fail "too many data disks ($ND)"
    MEM=256M # run-guest.sh's -m
    for r in $(seq "$RUNS"); do
        cp --sparse=always "$GUEST_DISK" "$D/boot.raw"
        dev=() servers=()
        for i in $(seq 0 $((ND - 1))); do
            read -r f p <<<"${DISKS[i]}"
            name=g$i
            create "$f" "$name" $((IMAGE_MIB + i))
            fill "$f" "$name" $((IMAGE_MIB + i))
            drop_cache "$f" "$name"
            addr=$(printf 0x%x $((6 + i)))
            case $p in
                qemu)
                    case $f in
                        hlfs) dev+=(-drive "file=$(image hlfs "$name"),if=none,id=d$i,cache=none") ;;
                        *) dev+=(-drive "file=$(image "$f" "$name"),format=$f,if=none,id=d$i,cache=none") ;;
                    esac
                    dev+=(-device "virtio-blk-pci,drive=d$i,addr=$addr") ;;
                nbd)
                    serve "$f" "$name" nbd "$D/$name.sock"
                    servers+=("$SERVER")
                    dev+=(-drive "file=nbd+unix:///$name?socket=$D/$name.sock,format=raw,if=none,id=d$i,cache=none"
                        -device "virtio-blk-pci,drive=d$i,addr=$addr") ;;
                vub)
                    serve "$f" "$name" vub "$D/$name.sock"
                    servers+=("$SERVER")
                    dev+=(-chardev "socket,id=c$i,path=$D/$name.sock"
                        -device "vhost-user-blk-pci,chardev=c$i,addr=$addr,num-queues=1") ;;
            esac
        done
        cmd=""
        for k in "${GROWS[@]}"; do
            for j in $(seq 0 $((ND - 1))); do
                i=$(((j + r - 1) % ND))
                cmd+="${cmd:+;}fio:name=$k-$i,${GJOB[$k]},$COMMON,filename=/dev/vd${LETTERS[i]}"
            done
        done
        # Which device is which: disk i is IMAGE_MIB + i MiB, and last of all
        # its last 4 KiB get the byte 0x50+i (checked below); on any other
        # disk that write fails (past the end) or lands where no check looks.
        for i in $(seq 0 $((ND - 1))); do
            cmd+=";fio:name=tag-$i,rw=write,bs=4k,size=4k,offset=$(((IMAGE_MIB + i) * 1048576 - 4096))"
            cmd+=",buffer_pattern=$(printf 0x%x $((0x50 + i))),scramble_buffers=0,direct=1,filename=/dev/vd${LETTERS[i]}"
        done
        log "guest round $r/$RUNS: $ND data disks, $((${#GROWS[@]} * ND)) fio jobs of ${FIO_RUNTIME} s"
        HLFS_GUEST_ACCEL=$ACCEL "$HLFS_ROOT/tests/guest/run-guest.sh" -q "$QEMU_BIN/qemu-system-x86_64" -k \
            -D none -c "${cmd//,/,,}" -l "$D/guest.log" -t $((120 + 3 * ${#GROWS[@]} * ND * FIO_RUNTIME)) -- \
            -append "$APPEND" -object "memory-backend-memfd,id=mem,size=$MEM,share=on" -machine memory-backend=mem \
            -drive "file=$D/boot.raw,format=raw,if=none,id=boot,cache=none" \
            -device virtio-blk-pci,drive=boot,addr=0x5 "${dev[@]}" 2>"$D/guest.err" ||
            fail "guest round $r failed:
$(tail -n 5 "$D/guest.err")
--- serial console ---
$(tail -c 3000 "$D/guest.log")"
        for SERVER in "${servers[@]}"; do stop; done
        for i in $(seq 0 $((ND - 1))); do
            read -r f p <<<"${DISKS[i]}"
            name=g$i
            c=$(cached "$f" "$name") # before the check below reads through the page cache
            # fio's sequential write began at offset 0 of each data disk:
            # the fill pattern must be gone from there.
            # shellcheck disable=SC2046
            out=$(qemu-io $(fmt_args "$f") -c 'read -P 0x3c 0 1M' "$(image "$f" "$name")" 2>&1) || true
            grep -q 'Pattern verification failed' <<<"$out" ||
                fail "after guest round $r the first MiB of $f via $p still holds the fill, so fio wrote elsewhere: $out"
            # shellcheck disable=SC2046
            out=$(qemu-io $(fmt_args "$f") -c "read -P $((0x50 + i)) $(((IMAGE_MIB + i) * 1048576 - 4096)) 4k" \
                "$(image "$f" "$name")" 2>&1) || true
            grep -q 'read 4096/4096' <<<"$out" && ! grep -q 'Pattern verification failed' <<<"$out" ||
                fail "after guest round $r the last 4 KiB of $f via $p do not hold the byte the guest wrote to /dev/vd${LETTERS[i]} there: the guest's disks are not in the order of their PCI slots: $out"
            /usr/bin/python3 - "$D/guest.log" "$f" "$p" "$r" "$c" "$i" "${GROWS[@]}" >>"$RES" <<'EOF' ||
import json, re, sys
log, f, p, r, cached, i, *rows = sys.argv[1:]
text = open(log, errors="replace").read().replace("\r", "")
for k in rows:
    m = re.search(r"HLFS-GUEST: fio-begin=%s-%s\n(.*?)\n[^\n]*HLFS-GUEST: fio-end=%s-%s" % (k, i, k, i), text, re.S)
    if not m:
        sys.exit(f"no fio result for {k}-{i} in {log}")
    body = m.group(1)
    j = json.loads(body[body.index("{"):])["jobs"][0]
    io = j["write" if k.endswith("w") else "read"]
    val = io["iops"] if k.startswith("g-4k") else io["bw_bytes"] / 2**20
    print(f"guest\t{k}\t{f}\t{p}\t{r}\t{val:.3f}\t{cached}")
EOF
                fail "parsing fio's results ($f via $p, round $r) failed"
            remove "$f" "$name"
        done
        log "guest round $r/$RUNS done ($(($(date +%s) - T0)) s, load $(cut -d' ' -f1 /proc/loadavg))"
    done
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

/usr/bin/python3 - "$RES" "$LOAD_START" "$LOAD_END" "$ACCEL" "$(qemu-img --version | head -1)" \
    "$(($(date +%s) - T0))" "$RUNS" "$IMAGE_MIB" "$DEPTH" <<'EOF'
import statistics, sys
res, load0, load1, accel, qver, secs, runs, mib, depth = sys.argv[1:]
LABEL = {
    "h-4kw": f"4K scattered overwrite, QD{depth}, filled image",
    "h-4kr": f"4K scattered read, QD{depth}",
    "h-1mw": f"1M sequential write, QD{depth}, fresh image",
    "h-1mr": f"1M sequential read, QD{depth}",
    "g-4kr": f"4K random read, QD{depth}",
    "g-1mr": f"1M sequential read, QD{depth}",
    "g-4kw": f"4K random write, QD{depth}, filled image",
    "g-1mw": f"1M sequential write, QD{depth}, filled image",
}
V, C = {}, {}
order = {"host": [], "guest": []}
fmts = {"host": [], "guest": []}
for line in open(res):
    part, k, f, p, r, val, cached = line.rstrip("\n").split("\t")
    V.setdefault((k, f, p), []).append(float(val))
    C.setdefault((k, f, p), []).append(int(cached))
    if k not in order[part]:
        order[part].append(k)
    if f not in fmts[part]:
        fmts[part].append(f)
med = {key: statistics.median(v) for key, v in V.items()}
unit = lambda k: "IOPS" if "-4k" in k else "MiB/s"
print(f"\naccelerator: {accel.upper()}; {qver}; {runs} rounds, {mib} MiB images; {int(secs) // 60} min {int(secs) % 60} s in all")
print(f"load average: {load0} at start, {load1} at end")
print("\nper-run values (IOPS for 4K rows, MiB/s for 1M rows):")
for part in ("host", "guest"):
    for k in order[part]:
        for f in fmts[part]:
            for p in ("qemu", "nbd", "vub"):
                if (k, f, p) in V:
                    print(f"  {k} {f:5} {p:4}: {' '.join(f'{x:,.0f}' for x in V[k, f, p])}")
print("\npage cache after the runs (fincore, largest of the rounds; ~0 = O_DIRECT bypassed it):")
for part in ("host", "guest"):
    for k in order[part]:
        print(f"  {k}: " + ", ".join(f"{f}/{p} {max(C[k, f, p]) / 2**20:.1f} MiB"
                                      for f in fmts[part] for p in ("qemu", "nbd", "vub") if (k, f, p) in C))
for part, paths, title in (("host", ("qemu", "nbd"), "qemu-img bench on the host (-t none, daemon cache.direct=on)"),
                           ("guest", ("qemu", "nbd", "vub"), f"fio in the test guest ({accel.upper()}, direct=1, libaio)")):
    if not order[part]:
        continue
    print(f"\n{title}: medians of {runs} rounds\n")
    head = " | ".join(f"{f} {p}" for f in fmts[part] for p in paths)
    ratios = [f"{f} {p}/qemu" for f in fmts[part] for p in paths if p != "qemu"]
    if "raw" in fmts[part] and "hlfs" in fmts[part]:
        ratios += [f"hlfs/raw {p}" for p in paths]
    print(f"| workload | {head} | " + " | ".join(ratios) + " |")
    print("|---|" + "---:|" * (len(fmts[part]) * len(paths) + len(ratios)))
    for k in order[part]:
        cells = [f"{med[k, f, p]:,.0f}" for f in fmts[part] for p in paths]
        rs = [f"{med[k, f, p] / med[k, f, 'qemu']:.2f}" for f in fmts[part] for p in paths if p != "qemu"]
        if "raw" in fmts[part] and "hlfs" in fmts[part]:
            rs += [f"{med[k, 'hlfs', p] / med[k, 'raw', p]:.2f}" for p in paths]
        print(f"| {LABEL[k]} ({unit(k)}) | " + " | ".join(cells) + " | " + " | ".join(rs) + " |")
EOF
