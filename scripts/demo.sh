#!/usr/bin/env bash
# The main job, end to end, printing what it does: build HLFS, create a
# volume, import a raw disk image, snapshot it, change the volume, clone the
# snapshot, export everything and compare byte for byte; then build the
# patched QEMU and a small Debian guest, import the guest into a volume,
# snapshot it, clone the snapshot and boot the clone.
#   bash scripts/demo.sh [WORKDIR]     (default /tmp/hlfs-demo, wiped first)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/common.sh
need_cargo
need_apt gcc libc6-dev pkg-config

work=${1:-/tmp/hlfs-demo}
rm -rf "$work"
mkdir -p "$work"
bin=${CARGO_TARGET_DIR:-$root/target}/release
hlfs="$bin/hlfs"

step "building hlfs (cargo build --release)"
cargo build --release -p hlfs-cli
link_seed_tools "$bin"

step "making a 64 MiB raw disk image with data and holes"
python3 - "$work/disk.raw" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    f.truncate(64 << 20)
    for i in range(0, 64, 3):           # 1 MiB of data every 3 MiB
        f.seek(i << 20)
        f.write(os.urandom(1 << 20))
PY

vol="hlfs:local://$work/vols/base"
step "hlfs create $vol 64M"
"$hlfs" create "$vol" 64M
step "hlfs import disk.raw $vol"
"$hlfs" import "$work/disk.raw" "$vol"
step "hlfs snapshot create $vol snapshot1"
"$hlfs" snapshot create "$vol" snapshot1

step "changing the head after the snapshot (import a second image)"
cp "$work/disk.raw" "$work/disk2.raw"
dd if=/dev/urandom of="$work/disk2.raw" bs=1M count=2 seek=10 conv=notrunc status=none
"$hlfs" import "$work/disk2.raw" "$vol"

clone="hlfs:local://$work/vols/clone1"
step "hlfs clone $vol%snapshot1 $clone"
"$hlfs" clone "$vol%snapshot1" "$clone"

step "hlfs info $vol"
"$hlfs" info "$vol"
"$hlfs" snapshot list "$vol"

step "exporting and comparing"
"$hlfs" export "$vol%snapshot1" "$work/snap.out"
"$hlfs" export "$vol" "$work/head.out"
"$hlfs" export "$clone" "$work/clone.out"
cmp "$work/disk.raw" "$work/snap.out" && echo "snapshot1 == disk.raw"
cmp "$work/disk2.raw" "$work/head.out" && echo "head == disk2.raw"
cmp "$work/disk.raw" "$work/clone.out" && echo "clone == disk.raw (its base snapshot)"

step "hlfs fsck $vol"
"$hlfs" fsck "$vol"
step "building the patched QEMU (qemu-patch/build.sh; cached after the first run, ~7 min on a fresh machine)"
cargo build --release -p hlfs
qbin=$(HLFS_LIB_DIR="$bin" qemu-patch/build.sh | tail -n1)
export PATH="$qbin:$PATH"
step "building the test guest from Debian packages (tests/guest/build-guest.sh; cached)"
guest=$(tests/guest/build-guest.sh | tail -n1)

gvol="hlfs:local://$work/vols/guest"
step "qemu-img create -f hlfs $gvol 1G; qemu-img convert guest.raw $gvol"
qemu-img create -f hlfs "$gvol" 1G
qemu-img convert "$guest" "$gvol"
step "qemu-img snapshot -c installed $gvol"
qemu-img snapshot -c installed "$gvol"
qemu-img snapshot -l "$gvol"
gclone="hlfs:local://$work/vols/guest-clone"
step "clone.hlfs -f ${gvol#hlfs:}%installed -s ${gclone#hlfs:}"
"$bin/clone.hlfs" -f "${gvol#hlfs:}%installed" -s "${gclone#hlfs:}"

step "booting the clone: qemu-system-x86_64 -drive file=$gclone,if=virtio (the guest writes a marker and powers off)"
QEMU="$qbin/qemu-system-x86_64" tests/guest/run-guest.sh -D "file=$gclone,if=virtio" \
    -c "write:hello-from-the-clone" -l "$work/boot.log" -t 300
grep "HLFS-GUEST:" "$work/boot.log"
grep -q "HLFS-GUEST: wrote=hello-from-the-clone" "$work/boot.log"
step "checking: the clone holds the marker, its base snapshot does not"
"$hlfs" export "$gclone" "$work/guest-clone.raw"
"$hlfs" export "$gvol%installed" "$work/guest-base.raw"
echo "clone marker: $(tests/guest/read-marker.sh "$work/guest-clone.raw")"
echo "base marker:  $(tests/guest/read-marker.sh "$work/guest-base.raw")"
[ "$(tests/guest/read-marker.sh "$work/guest-clone.raw")" = hello-from-the-clone ]
[ "$(tests/guest/read-marker.sh "$work/guest-base.raw")" = NONE ]

echo
echo "demo: all steps passed (work dir: $work)"
