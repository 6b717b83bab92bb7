#!/usr/bin/env bash
# Installs the tools strata's interop tests run against: skopeo, umoci and containerd (Debian
# packages).
#
#   scripts/install-test-deps.sh
#
# Idempotent and quiet: does nothing when both are on PATH; otherwise runs `apt-get update`
# (only when the package lists are missing or the install fails without it) and
# `apt-get install -y`. Needs root (or sudo). The interop tests in
# tests/tests/suite/images_io.rs skip without these tools, or fail with
# STRATA_REQUIRE_INTEROP=1 (as in CI).
set -euo pipefail

need=()
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v umoci >/dev/null 2>&1 || need+=(umoci)
command -v containerd >/dev/null 2>&1 || need+=(containerd)
if [[ ${#need[@]} -eq 0 ]]; then
    exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-test-deps: need root or sudo to install ${need[*]}" >&2; exit 1; }
    sudo=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# apt's output goes to a log that is shown only when something fails.
quiet() {
    "$@" >>"$log" 2>&1 || { cat "$log" >&2; return 1; }
}
apt_install() {
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
}
# One `apt-get update`, and only if the lists are empty or the install needs fresher ones.
if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null || ! apt_install >>"$log" 2>&1; then
    quiet "${sudo[@]}" apt-get update -q
    quiet apt_install
fi
for tool in "${need[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install-test-deps: $tool still not on PATH" >&2; exit 1; }
done
echo "install-test-deps: installed ${need[*]}" >&2
