#!/usr/bin/env bash
# The README's test command: set up everything the suite needs on a fresh machine, then run it.
#   bash scripts/test.sh [PYTEST ARGS]
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # torch threads spin-wait and collapse on a shared machine
bash scripts/system_deps.sh
bash scripts/setup.sh ml,ray,test
# the side environments the suite drives (workflow platforms, DVC, the MLflow server), built side by side; the
# fixtures find them up to date (scripts/setup_env.sh is a no-op when its lock did not change)
pids=()
for env in dvc mlflow-server kfp airflow prefect metaflow; do
  bash scripts/setup_env.sh "$env" > /dev/null & pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
exec .venv/bin/python -m pytest "$@"
