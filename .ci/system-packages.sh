#!/usr/bin/env bash
# Debian packages used by the browser and container integration tests. Idempotent: installs only
# what is missing (CI runs it as root on a fresh Debian bookworm machine).
#   browser tests:   chromium, chromium-driver
#   container tests: podman, buildah, runc, debootstrap (base image from Debian packages), catatonit
#   postgres tests:  postgresql (tests/pg.py runs its initdb/pg_ctl from /usr/lib/postgresql/*/bin)
set -euo pipefail
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
plain=() containers=()
command -v git >/dev/null || plain+=(git)
for pkg in chromium chromium-driver postgresql; do installed "$pkg" || plain+=("$pkg"); done
for pkg in podman buildah runc debootstrap catatonit; do installed "$pkg" || containers+=("$pkg"); done
if [ ${#plain[@]} -gt 0 ] || [ ${#containers[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [ ${#plain[@]} -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${plain[@]}"
  fi
  if [ ${#containers[@]} -gt 0 ]; then
    # with recommends: podman's network and storage helpers come along (tested that way)
    apt-get install -y -qq "${containers[@]}"
  fi
fi
# the commands the tests look for, whatever the packages were called: a gap fails here, by name
missing=()
for tool in git chromium chromedriver podman buildah; do command -v "$tool" >/dev/null || missing+=("$tool"); done
# PostgreSQL's server programs are not on PATH: the tests look under /usr/lib/postgresql/<version>/bin
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=("initdb (/usr/lib/postgresql/*/bin)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "error: still missing after the install: ${missing[*]}" >&2
  exit 1
fi
