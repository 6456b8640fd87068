#!/usr/bin/env bash
# Create .venv and install alignpipe into it. Usage: bash scripts/setup.sh [EXTRAS]   (default: ml)
# Every package comes from the locked set in constraints/main.txt (re-resolve it with scripts/lock.sh), so a new
# machine installs the versions this project was tested with. torch is installed first and pinned: an unpinned
# torch pulls several GB of CUDA packages on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-ml}"
[ -x .venv/bin/python ] || python3 -m venv .venv
quiet() { "$@" 2> >(grep -v "WARNING: Location" >&2); }  # this machine's mirror config warns per package
quiet .venv/bin/python -m pip install -q --disable-pip-version-check pip==26.3  # the resolver the locks were made with
quiet .venv/bin/pip install -q --disable-pip-version-check -c constraints/main.txt torch==2.13.0
quiet .venv/bin/pip install -q --disable-pip-version-check -c constraints/main.txt -e ".[$extras]"
