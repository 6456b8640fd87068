#!/usr/bin/env bash
# Re-resolve the locked dependency set of one environment from pyproject.toml and write it to constraints/.
#   bash scripts/lock.sh                 -> constraints/main.txt  (the main venv: core + ml + ray + test extras)
#   bash scripts/lock.sh ENV EXTRAS      -> constraints/ENV.txt   (a side env of scripts/setup_env.sh: EXTRAS = ENV)
# Run it on purpose (a dependency added, a version to take), review the diff, commit it. Every install
# (scripts/setup.sh, and so the README's commands and CI) installs with `-c constraints/<env>.txt`.
set -euo pipefail
cd "$(dirname "$0")/.."
env_name="${1:-main}"
extras="${2:-ml,ray,test}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
pip_() { "$tmp/venv/bin/pip" -q --disable-pip-version-check "$@" 2> >(grep -v "WARNING: Location" >&2); }
"$tmp/venv/bin/python" -m pip install -q pip==26.3  # pip 23's resolver backtracked for an hour over the test set
case ",$extras," in *,ml,*) pip_ install torch==2.13.0 ;; esac  # the CPU build first: see scripts/setup.sh
pip_ install ".[$extras]"
{
  echo "# Locked by scripts/lock.sh $env_name $extras on $(date -u +%Y-%m-%d) (Python $("$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())'))."
  echo "# Do not edit by hand: rerun the script, review the diff, commit."
  "$tmp/venv/bin/pip" freeze --exclude-editable --all | grep -v -E '^(alignpipe|pip|setuptools|wheel)[=@ ]' | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/' | sort -f
} > "constraints/$env_name.txt"
echo "wrote constraints/$env_name.txt ($(grep -vc '^#' "constraints/$env_name.txt") packages)"
