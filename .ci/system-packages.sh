#!/usr/bin/env bash
# Debian packages used by the browser and container integration tests.
set -euo pipefail
need=()
command -v git >/dev/null || need+=(git)
[ ${#need[@]} -eq 0 ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
