#!/usr/bin/env bash
# Unpacks the same image with containerd 1.6 (overlayfs) and with strata (overlay and
# native), mounts each root filesystem read-only and compares them entry by entry
# (scripts/tree-diff.py: types, modes, owners, contents, links, xattrs, devices, mtimes).
#
#   scripts/compare-with-containerd.sh [IMAGE.tar]   (default: the peers' small.tar, built
#                                                     by ../shared/peers/make-images.sh)
# Needs root. Starts a private containerd under a temporary directory and removes it after.
# Exit status: 0 when every tree matches, 1 when one differs.
set -euo pipefail
cd "$(dirname "$0")/.."
peers=$(cd ../shared/peers && pwd)
image=${1:-${IMAGES_DIR:-/tmp/peer-images}/small.tar}
if [ ! -f "$image" ]; then
  "$peers/make-images.sh" "$(dirname "$image")"
fi
image=$(cd "$(dirname "$image")" && pwd)/$(basename "$image")

work=$(mktemp -d /var/tmp/strata-compare.XXXXXX)
ctd="$work/containerd"
cleanup() {
  for m in "$work"/mnt-*; do mountpoint -q "$m" 2>/dev/null && umount "$m"; done
  "$peers/containerd-down.sh" "$ctd" --purge >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# GCCTL names a gcctl binary to use (the test suite passes its own); else build one.
if [ -z "${GCCTL:-}" ]; then
  cargo build --release -p gcctl >/dev/null 2>&1 || cargo build --release -p gcctl
  GCCTL=./target/release/gcctl
fi
gcctl() { "$GCCTL" --root "$work/strata" "$@"; }

# containerd: import (which unpacks into overlayfs), then mount the image read-only.
"$peers/containerd-up.sh" "$ctd" >/dev/null
ctr() { command ctr -a "$ctd/containerd.sock" "$@"; }
name=$(ctr images import --snapshotter overlayfs "$image" | sed -n 's/^unpacking \(.*\) (sha256:.*/\1/p' | head -n 1)
[ -n "$name" ] || name=$(ctr images ls -q | head -n 1)
mkdir -p "$work/mnt-containerd"
ctr images mount --snapshotter overlayfs "$name" "$work/mnt-containerd" >/dev/null

status=0
for sn in overlay native; do
  gcctl import "$image" --unpack --snapshotter $sn >/dev/null
  top=$(gcctl --json unpack "$name" --snapshotter $sn | sed -n 's/.*"chain_id": *"\(sha256:[0-9a-f]*\)".*/\1/p' | tail -n 1)
  gcctl snapshots --snapshotter $sn view "view-$sn" "$top" >/dev/null
  mkdir -p "$work/mnt-$sn"
  eval "$(gcctl snapshots --snapshotter $sn mounts "view-$sn" "$work/mnt-$sn")"
  echo "== $name: containerd (overlayfs) vs strata ($sn)"
  if python3 scripts/tree-diff.py "$work/mnt-containerd" "$work/mnt-$sn"; then
    echo "same tree"
  else
    status=1
  fi
  umount "$work/mnt-$sn"
done
exit $status
