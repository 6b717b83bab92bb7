#!/usr/bin/env bash
# Builds gcctl and runs it end to end on the default store (or $STRATA_ROOT): ingest a blob,
# list it, read it back, tag it as an image, protect it with a lease, show what the store
# holds, then remove what the demo made. It works in its own namespace, `strata-demo`, so it
# leaves the rest of the store alone.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p gcctl
gcctl() { ./target/release/gcctl -n strata-demo "$@"; }
step() { printf '\n\033[1m$ gcctl %s\033[0m\n' "$*"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c 3000000 /dev/urandom > "$work/blob"
printf '{"schemaVersion":2}\n' > "$work/manifest"

step info
gcctl info

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

printf '\n\033[1m# removing what the demo made\033[0m\n'
gcctl leases rm demo-lease
gcctl images rm registry.example/demo:1 registry.example/demo:latest
gcctl content rm "$digest" "$mdigest"
gcctl ns rm strata-demo

# Records are gone; their blob files stay on disk until garbage collection (the GC issue)
# finds that no namespace uses them.
step info
gcctl info
echo "done"
