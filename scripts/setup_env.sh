#!/usr/bin/env bash
# A side environment for a tool whose dependencies must not mix with the main venv's (a workflow platform, DVC,
# an MLflow server...): .venvs/NAME with alignpipe's core plus the extra NAME of pyproject.toml, every package at
# the version locked in constraints/NAME.txt (re-resolve with `bash scripts/lock.sh NAME NAME`).
#   bash scripts/setup_env.sh NAME      -> prints the env's bin directory
set -euo pipefail
cd "$(dirname "$0")/.."
name="$1"
[ -f "constraints/$name.txt" ] || { echo "no constraints/$name.txt: run bash scripts/lock.sh $name $name" >&2; exit 2; }
venv=".venvs/$name"
stamp="$venv/.locked-$(sha256sum "constraints/$name.txt" pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check pip==26.3 2> >(grep -v "WARNING: Location" >&2)
  "$venv/bin/pip" install -q --disable-pip-version-check -c "constraints/$name.txt" -e ".[$name]" \
    2> >(grep -v "WARNING: Location" >&2)
  rm -f "$venv"/.locked-*; touch "$stamp"
fi
echo "$PWD/$venv/bin"
