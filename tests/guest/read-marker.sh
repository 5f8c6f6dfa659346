#!/usr/bin/env bash
# Reads a file from the test guest's root filesystem offline, without booting
# or mounting: debugfs opens the ext4 partition in place ("image?offset=N").
#
# Usage: read-marker.sh RAW_IMAGE [PATH]     (PATH defaults to /var/hlfs-marker)
# Prints the file's contents (no newline added), or NONE if it does not
# exist, like the guest's "marker=" line. Exits non-zero if the image has no
# readable ext2/3/4 root filesystem.
# RAW_IMAGE is either the partitioned disk from build-guest.sh (the root is
# the Linux partition) or a bare filesystem image (-kernel fallback).
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 RAW_IMAGE [PATH]" >&2
    exit 2
fi
img=$1
path=${2:-/var/hlfs-marker}
[ -r "$img" ] || { echo "read-marker: cannot read $img" >&2; exit 2; }
command -v debugfs >/dev/null || { echo "read-marker: debugfs missing (apt-get install e2fsprogs)" >&2; exit 2; }

# Start sector of the first Linux (type 83) MBR partition; none means the
# image is the filesystem itself.
start=0
if command -v sfdisk >/dev/null && table=$(sfdisk -d "$img" 2>/dev/null); then
    start=$(echo "$table" |
        sed -n 's/.*start= *\([0-9][0-9]*\),.*type=83.*/\1/p' | head -1)
    start=${start:-0}
fi
dev="$img?offset=$((start * 512))"

# debugfs exits 0 even when a lookup fails, so judge by what it says.
err=$(mktemp)
trap 'rm -f "$err"' EXIT
if ! debugfs -R "stat $path" "$dev" >/dev/null 2>"$err" || grep -q 'Bad magic\|bad superblock\|Bad magic number' "$err"; then
    echo "read-marker: no ext2/3/4 filesystem at sector $start of $img:" >&2
    cat "$err" >&2
    exit 1
fi
if grep -q 'File not found' "$err"; then
    echo -n NONE
    exit 0
fi
debugfs -R "cat $path" "$dev" 2>/dev/null
