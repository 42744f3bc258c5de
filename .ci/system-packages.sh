#!/usr/bin/env bash
# Debian packages used by the browser and container integration tests. Idempotent: installs only
# what is missing (CI runs it as root on a fresh Debian bookworm machine).
#   browser tests:   chromium, chromium-driver
#   container tests: podman, buildah, runc, debootstrap (base image from Debian packages), catatonit
set -euo pipefail
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
plain=() containers=()
command -v git >/dev/null || plain+=(git)
for pkg in chromium chromium-driver; do installed "$pkg" || plain+=("$pkg"); done
for pkg in podman buildah runc debootstrap catatonit; do installed "$pkg" || containers+=("$pkg"); done
[ ${#plain[@]} -eq 0 ] && [ ${#containers[@]} -eq 0 ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ ${#plain[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${plain[@]}"
fi
if [ ${#containers[@]} -gt 0 ]; then
  # with recommends: podman's network and storage helpers come along (tested that way)
  apt-get install -y -qq "${containers[@]}"
fi
