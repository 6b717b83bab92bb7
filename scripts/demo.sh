#!/usr/bin/env bash
# Builds gcctl and runs it end to end on the default store (or $STRATA_ROOT): import the sample
# OCI archive the repository ships and unpack it, show its snapshots and mount its root
# filesystem, then ingest, read back, tag and lease a blob, collect garbage (why a layer is
# kept, disk usage, a dry run, a synchronous delete, fsck), and finally remove what the demo
# made. It works in its own namespace, `strata-demo`; the garbage collection covers the whole
# store, but removes only what nothing references (as a daemon's collector would).
# Overlay needs root; without it the demo uses the native snapshotter.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p gcctl
gcctl() { ./target/release/gcctl -n strata-demo "$@"; }
step() { printf '\n\033[1m$ gcctl %s\033[0m\n' "$*"; }

work=$(mktemp -d)
mnt="$work/rootfs"
mkdir -p "$mnt"
cleanup() {
  mountpoint -q "$mnt" 2>/dev/null && umount "$mnt"
  rm -rf "$work"
}
trap cleanup EXIT
if [ "$(id -u)" -eq 0 ]; then sn=overlay; else sn=native; fi
head -c 3000000 /dev/urandom > "$work/blob"
printf '{"schemaVersion":2}\n' > "$work/manifest"

step info
gcctl info

step import fixtures/sample.tar --unpack --snapshotter $sn
gcctl import fixtures/sample.tar --unpack --snapshotter $sn
image=docker.io/strata/sample:latest
top=$(gcctl --json unpack "$image" --snapshotter $sn | sed -n 's/.*"chain_id": *"\(sha256:[0-9a-f]*\)".*/\1/p' | tail -n 1)

step images ls
gcctl images ls

step snapshots --snapshotter $sn tree
gcctl snapshots --snapshotter $sn tree

step snapshots --snapshotter $sn view demo-view "${top:0:19}..."
gcctl snapshots --snapshotter $sn view demo-view "$top"
step snapshots --snapshotter $sn mounts demo-view rootfs
gcctl snapshots --snapshotter $sn mounts demo-view "$mnt"
if [ "$(id -u)" -eq 0 ]; then
  eval "$(gcctl snapshots --snapshotter $sn mounts demo-view "$mnt")"
  step "(mounted) ls -l rootfs/usr/bin rootfs/opt/app"
  ls -l "$mnt/usr/bin" "$mnt/opt/app"
  umount "$mnt"
fi

step snapshots --snapshotter $sn usage
gcctl snapshots --snapshotter $sn usage

step content ingest demo-blob --label demo=yes '<' blob
digest=$(gcctl content ingest demo-blob --label demo=yes < "$work/blob")
echo "$digest"

step content ls
gcctl content ls

step content get "$digest" '| cmp - blob'
gcctl content get "$digest" | cmp - "$work/blob" && echo "identical bytes"

step content ingest bad --expected-digest "sha256:$(printf '0%.0s' {1..64})" '<' blob "(must fail)"
if gcctl content ingest bad --expected-digest "sha256:$(printf '0%.0s' {1..64})" < "$work/blob"; then
  echo "unexpected success" >&2; exit 1
else
  echo "refused with exit $?"
fi

mdigest=$(gcctl content ingest demo-manifest < "$work/manifest")
msize=$(wc -c < "$work/manifest")
step images create registry.example/demo:1 --target "$mdigest" ...
gcctl images create registry.example/demo:1 --target "$mdigest" \
  --media-type application/vnd.oci.image.manifest.v1+json --size "$msize" --label team=storage
gcctl images tag registry.example/demo:1 registry.example/demo:latest

step images ls --filter 'name~=^registry' --filter 'labels."team"==storage'
gcctl images ls --filter 'name~=^registry' --filter 'labels."team"==storage'

step leases create --id demo-lease --expires 1h
gcctl leases create --id demo-lease --expires 1h
gcctl leases add demo-lease content "$digest"
step leases resources demo-lease
gcctl leases resources demo-lease

step content ls --json
gcctl content ls --json

printf '\n\033[1m# garbage collection\033[0m\n'
manifest=$(gcctl --json images ls --filter "name==$image" | sed -n 's/.*"digest": *"\(sha256:[0-9a-f]*\)".*/\1/p' | head -n 1)
layer=$(gcctl content get "$manifest" | sed -n 's/.*"layers":\[{[^}]*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p')
step why "${layer:0:19}..."
gcctl why "$layer"

step du
gcctl du

# Without its two names the demo manifest blob is garbage; so is the view made for the mount
# (no lease holds it). The dry run lists them; the collection below removes them.
gcctl images rm registry.example/demo:1 registry.example/demo:latest >/dev/null
step gc --dry-run
gcctl gc --dry-run

step images rm "$image" --sync
gcctl images rm "$image" --sync

step snapshots --snapshotter $sn ls
gcctl snapshots --snapshotter $sn ls

# fsck checks the whole store: exit 1 means it found problems, printed above.
step fsck
if gcctl fsck; then :; else
  rc=$?
  [ "$rc" -eq 1 ] || exit "$rc"
  echo "fsck found problems in the store (exit 1)"
fi

printf '\n\033[1m# removing what the demo made\033[0m\n'
# The lease held the demo blob: removing it with --sync collects the blob at once.
step leases rm demo-lease --sync
gcctl leases rm demo-lease --sync
# Whatever is left (nothing, unless the demo failed half-way on an earlier run): snapshots go
# children first, then the blobs.
chain=$(gcctl --json snapshots --snapshotter $sn ls | sed -n 's/.*"name": *"\([^"]*\)".*/\1/p')
while [ -n "$chain" ]; do
  for key in $chain; do gcctl snapshots --snapshotter $sn rm "$key" >/dev/null 2>&1 || true; done
  chain=$(gcctl --json snapshots --snapshotter $sn ls | sed -n 's/.*"name": *"\([^"]*\)".*/\1/p')
done
for d in $(gcctl --json content ls | sed -n 's/.*"digest": *"\(sha256:[0-9a-f]*\)".*/\1/p'); do
  gcctl content rm "$d" >/dev/null
done
gcctl ns rm strata-demo

step gc
gcctl gc

step info
gcctl info
echo "done"
