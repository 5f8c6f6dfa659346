#!/usr/bin/env bash
# QEMU's cache modes reach libhlfs. With cache=none (qemu-io -t none, the
# driver passes BDRV_O_NOCACHE as HLFS_OPEN_DIRECT) 64 MiB written and read
# back leave the volume's segments out of the host page cache (fincore
# shows under 5% of them cached), and the segments hold page-aligned
# records; with writeback the same writes go through the page cache (a
# control: the check above can fail) and read back too. Data written in
# either mode reads back in the other, byte for byte. A drive reopened into
# the other mode (qemu-io reopen -c, as QEMU does on a cache-mode change)
# switches: what it writes after a reopen to none stays out of the page
# cache, what it writes after a reopen to writeback goes through it. FUA
# writes (write -f) are accepted and read back.
# shellcheck source=../lib/qemu.sh
. "$(dirname "$0")/../lib/qemu.sh"
e2e_init
qemu_init
command -v fincore >/dev/null || skip "no fincore (util-linux)"

T=$E2E_WORK
SIZE=$((256 << 20))

# cached_kib DIR: KiB of DIR's segment files in the page cache.
cached_kib() {
    local total=0 n f
    for f in "$1"/seg-*; do
        n=$(fincore --bytes --noheadings --output RES "$f")
        total=$((total + n))
    done
    echo $((total / 1024))
}
drop_cache() { # the segments only, not the whole machine's cache
    local f
    sync
    for f in "$1"/seg-*; do dd if="$f" iflag=nocache count=0 status=none; done
}

for mode in none writeback; do
    V=hlfs:local://$T/$mode
    must "create ($mode)" qemu-img create -f hlfs "$V" "$SIZE" >/dev/null
    drop_cache "$T/$mode"
    # 4 KiB writes (the inline path) and 1 MiB writes (the worker threads).
    qio "writes ($mode)" -t "$mode" "$V" -- \
        'aio_write -P 0x5a 0 4k' 'aio_write -P 0x5b 8k 4k' 'aio_flush' \
        'write -P 0x11 1M 32M' 'write -P 0x22 40M 32M' 'flush' \
        'read -P 0x11 1M 32M' 'read -P 0x22 40M 32M' 'read -P 0x5a 0 4k'
    kib=$(cached_kib "$T/$mode")
    log "cache=$mode: $kib KiB of the segments in the page cache after 64 MiB written and read"
    case $mode in
        none) [ "$kib" -lt $((64 * 1024 / 20)) ] ||
            fail "cache=none left $kib KiB of the segments in the page cache (more than 5% of 64 MiB)" ;;
        writeback) [ "$kib" -gt $((32 * 1024)) ] ||
            fail "control: cache=writeback left only $kib KiB in the page cache; the check cannot tell the modes apart" ;;
    esac
done

# Page-aligned records in the direct volume: every segment the cache=none
# session wrote is a whole number of 4 KiB pages (segment 1, from create,
# and the writeback volume's segments pack their records).
for f in "$T/none"/seg-*; do
    [ "${f##*/}" = seg-0000000000000001 ] && continue
    [ $(( $(stat -c %s "$f") % 4096 )) = 0 ] || fail "$f is not a whole number of pages"
done

# Each volume reads back in the other mode, and takes writes there.
qio "none -> writeback" -t writeback "hlfs:local://$T/none" -- \
    'read -P 0x11 1M 32M' 'read -P 0x22 40M 32M' 'read -P 0x5b 8k 4k' 'write -P 0x33 100M 1M'
qio "writeback -> none" -t none "hlfs:local://$T/writeback" -- \
    'read -P 0x11 1M 32M' 'read -P 0x22 40M 32M' 'read -P 0x5b 8k 4k' 'write -P 0x33 100M 1M'
# Reopen into the other cache mode: the open volume switches, from its
# next segment on.
V=hlfs:local://$T/reopen
must "create (reopen)" qemu-img create -f hlfs "$V" "$SIZE" >/dev/null
drop_cache "$T/reopen"
qio "reopen to none" -t writeback "$V" -- \
    'write -P 0x44 -f 0 1M' 'reopen -c none' 'write -P 0x55 4M 32M' 'flush' \
    'read -P 0x44 0 1M' 'read -P 0x55 4M 32M'
kib=$(cached_kib "$T/reopen")
log "reopened to cache=none: $kib KiB of the segments in the page cache after 33 MiB written"
[ "$kib" -lt $((4 * 1024)) ] ||
    fail "after reopen -c none, $kib KiB of the segments sit in the page cache: the reopen did not switch to O_DIRECT"
qio "reopen to writeback" -t none "$V" -- \
    'reopen -c writeback' 'write -P 0x66 40M 32M' 'flush' 'read -P 0x66 40M 32M' 'read -P 0x55 4M 32M'
kib=$(cached_kib "$T/reopen")
[ "$kib" -gt $((16 * 1024)) ] ||
    fail "after reopen -c writeback, only $kib KiB of the segments are cached: the reopen did not switch back"
must "fsck (reopen)" "$HLFS_CLI" fsck "local://$T/reopen" >/dev/null

for mode in none writeback; do
    qio "final ($mode)" -t none "hlfs:local://$T/$mode" -- 'read -P 0x33 100M 1M' 'read -P 0x11 1M 32M'
    must "fsck ($mode)" "$HLFS_CLI" fsck "local://$T/$mode" >/dev/null
done
log "passed"
