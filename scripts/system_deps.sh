#!/usr/bin/env bash
# System packages the test suite needs (Debian): a browser for page tests, git-lfs, a PostgreSQL server binary.
# Installed, never started here: each test fixture starts and stops its own server in a temp dir.
# Usage: bash scripts/system_deps.sh   (as root, or with sudo available; a no-op when everything is present)
set -euo pipefail
pkgs=(chromium chromium-driver git-lfs postgresql)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo_ apt-get update -qq
$sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
