#!/bin/sh
# Installs hlfs, snapshot.hlfs and clone.hlfs into PREFIX/bin (default /usr/local).
#
# Cargo cannot build a binary whose name contains a dot, so the seed's tools
# are built as snapshot_hlfs and clone_hlfs; this script adds the seed's
# names as symlinks next to them.
#
# Usage: cli/install.sh [PREFIX]
set -eu
prefix=${1:-${PREFIX:-/usr/local}}
here=$(cd "$(dirname "$0")" && pwd)
cargo install --locked --path "$here" --root "$prefix"
ln -sf snapshot_hlfs "$prefix/bin/snapshot.hlfs"
ln -sf clone_hlfs "$prefix/bin/clone.hlfs"
echo "installed hlfs, snapshot.hlfs and clone.hlfs in $prefix/bin"
