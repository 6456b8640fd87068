#!/usr/bin/env bash
# The README's main command as a newcomer runs it: a clean clone of this checkout, a fresh venv with no pip
# cache, then `alignpipe --version`, a usage error (must exit 2 with no traceback) and the default run.
#   bash scripts/smoke.sh
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q "$src" "$tmp/alignpipe"
cd "$tmp/alignpipe"
export PIP_NO_CACHE_DIR=1 OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
bash scripts/setup.sh
.venv/bin/alignpipe --version
set +e
.venv/bin/alignpipe nosuchcommand 2> usage.txt
code=$?
set -e
cat usage.txt
if [ "$code" -ne 2 ] || grep -q Traceback usage.txt; then
  echo "smoke: 'alignpipe nosuchcommand' exited $code (expected 2, no traceback)" >&2
  exit 1
fi
.venv/bin/alignpipe run
