#!/usr/bin/env bash
# The README's test command: set up everything the suite needs on a fresh machine, then run it.
#   bash scripts/test.sh [PYTEST ARGS]
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # torch threads spin-wait and collapse on a shared machine
bash scripts/system_deps.sh
bash scripts/setup.sh ml,ray,test
exec .venv/bin/python -m pytest "$@"
