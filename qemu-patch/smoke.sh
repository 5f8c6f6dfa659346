#!/usr/bin/env bash
# Run the guide's qemu-img / qemu-system commands against the patched QEMU.
#   qemu-patch/smoke.sh [BIN_DIR]     (default: the output of build.sh)
# Works in a fresh temporary directory; needs no guest image (it boots a
# 512-byte boot sector that prints to the serial port).  KVM if available.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${1:-$("$HERE/build.sh" | tail -n1)}
export PATH="$BIN:$PATH"
T=$(mktemp -d /tmp/hlfs-smoke.XXXXXX)
trap 'rm -rf "$T"' EXIT
V=hlfs:local://$T/testfs
fail() { echo "FAIL: $*" >&2; exit 1; }
run() { echo "+ $*" >&2; "$@"; }

# raw.img: a boot sector printing HLFS-BOOT-OK on COM1 and exiting QEMU,
# then 8 MiB of data
python3 - "$T/raw.img" <<'EOF'
import os, sys
# xor ax,ax; mov ds,ax; mov dx,0x3f8; mov si,msg; l: lodsb; test al,al;
# jz d; out dx,al; jmp l; d: mov al,0; out 0xf4,al (isa-debug-exit); hlt
code = bytes([0x31,0xC0,0x8E,0xD8,0xBA,0xF8,0x03,0xBE,0x18,0x7C,0xAC,0x84,
              0xC0,0x74,0x03,0xEE,0xEB,0xF8,0xB0,0x00,0xE6,0xF4,0xFA,0xF4]) \
       + b"HLFS-BOOT-OK\r\n\0"
mbr = code + bytes(510 - len(code)) + b"\x55\xaa"
with open(sys.argv[1], "wb") as f:
    f.write(mbr + bytes(4096 - 512) + os.urandom(8 << 20))
    f.truncate(64 << 20)
EOF

run qemu-img create -f hlfs "$V" 10G
run qemu-img info -f hlfs "$V" | grep 'virtual size: 10 GiB' >/dev/null || fail info
run qemu-img convert "$T/raw.img" "$V"
run qemu-img compare "$T/raw.img" "$V" 2>/dev/null | grep identical >/dev/null || fail compare
run qemu-img snapshot -c snapshot1 "$V"
run qemu-img snapshot -l "$V" | grep snapshot1 >/dev/null || fail "snapshot -l"
run qemu-img info --output json -U "$V" | grep '"format": "hlfs"' >/dev/null || fail "info json"
run qemu-img map --output json "$V" >/dev/null
run qemu-img bench -c 1000 -s 4k "$V" >/dev/null
run qemu-img create -f hlfs "$V"2 10G
run qemu-img create -b "$V%snapshot1" "$V"2
run qemu-img compare "$T/raw.img" "$V"2 2>/dev/null | grep identical >/dev/null || fail clone
run qemu-img create -f hlfs -F hlfs -b "$V%snapshot1" "$V"3 12G
run qemu-io -c 'write -P 0x5a 1M 64k' -c 'read -P 0x5a 1M 64k' "$V"3 >/dev/null
# snapshot1 has clones now, so delete another one
run qemu-img snapshot -c snapshot2 "$V"
run qemu-img snapshot -d snapshot2 "$V"
qemu-img snapshot -l "$V" | grep snapshot2 >/dev/null && fail "snapshot -d"
qemu-img info "$V%shopshot1" >/dev/null 2>&1 && fail "bad snapshot accepted"

ACCEL=tcg; [ -w /dev/kvm ] && ACCEL=kvm
for drive in "-drive file=$V,if=virtio" "-drive file=$V%snapshot1,if=virtio" "-hda $V"; do
    echo "+ qemu-system-x86_64 $drive" >&2
    # shellcheck disable=SC2086
    out=$(timeout 60 qemu-system-x86_64 -accel $ACCEL -m 256 -display none \
          -serial stdio -monitor none -no-reboot \
          -device isa-debug-exit,iobase=0xf4,iosize=4 $drive 2>&1) || true
    echo "$out" | grep HLFS-BOOT-OK >/dev/null || fail "boot from $drive: $out"
done
echo "smoke test passed ($BIN)"
