#!/usr/bin/env bash
# Install the peer tools the benchmarks compare against, each into its own virtual environment under
# benchmarks/ (gitignored). Nothing here becomes a dependency of alignpipe.
#
#   bash benchmarks/setup_peers.sh            # both
#   bash benchmarks/setup_peers.sh dvc        # only DVC
#   bash benchmarks/setup_peers.sh trl        # only TRL
#
# TRL's venv gets torch==2.13.0 FIRST (the CPU wheel on this machine) so that resolving trl's dependencies
# never pulls a multi-GB CUDA build; transformers is pinned to the version alignpipe runs on, so both sides
# of a comparison execute the same model code.
set -euo pipefail
export DVC_NO_ANALYTICS=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# pip warns once per package about configured local index folders that do not exist here; keep the log readable.
quiet_pip() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-python3}"
which_ones="${*:-dvc trl}"

setup_dvc() {
  local venv="$here/.venv-dvc"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  quiet_pip "$venv/bin/pip" install -q --upgrade pip
  quiet_pip "$venv/bin/pip" install -q "dvc>=3,<4"
  # Analytics stay off without touching the user's global DVC config: the benchmark sets DVC_NO_ANALYTICS=1
  # for every dvc call and `dvc config core.analytics false` in each repo it creates.
  DVC_NO_ANALYTICS=1 "$venv/bin/dvc" --version
}

setup_trl() {
  local venv="$here/.venv-trl"
  local tf_version
  tf_version="$("$py" -c 'import transformers; print(transformers.__version__)' 2>/dev/null || echo "")"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  quiet_pip "$venv/bin/pip" install -q --upgrade pip
  quiet_pip "$venv/bin/pip" install -q "torch==2.13.0"
  if [ -n "$tf_version" ]; then
    quiet_pip "$venv/bin/pip" install -q "trl==1.16.*" "transformers==$tf_version" "torch==2.13.0"
  else
    quiet_pip "$venv/bin/pip" install -q "trl==1.16.*" "torch==2.13.0"
  fi
  "$venv/bin/python" - <<'PY'
import torch, transformers, trl
from trl import SFTTrainer, RewardTrainer, RLOOTrainer, GRPOTrainer  # noqa: F401
assert "+cu" not in torch.__version__ and not torch.version.cuda, f"CUDA torch got in: {torch.__version__}"
print(f"trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")
PY
}

for t in $which_ones; do
  case "$t" in
    dvc) setup_dvc ;;
    trl) setup_trl ;;
    *) echo "unknown peer '$t' (expected dvc or trl)" >&2; exit 2 ;;
  esac
done
