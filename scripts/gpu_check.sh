#!/usr/bin/env bash
# On a machine with a GPU: the GPU-only tests (tests/gpu: CUDA training follows the CPU curve, bf16 autocast, NCCL
# between two GPUs when there are two, the memory model against CUDA's peak), then a short GPU benchmark (SFT step
# throughput of a GPT-2-small-shaped model, fp32 and bf16, and its memory against the plan). Under 8 minutes on
# one GPU; prints a summary. Run from the repository with its venv made (bash scripts/setup.sh ml,ray,test).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=.venv/bin/python
if ! "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA GPU visible to torch here; run it on a machine with one" >&2
  exit 2
fi
"$py" -c 'import torch; print("GPUs:", ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))'
start=$(date +%s)
set +e
timeout 360 "$py" -m pytest tests/gpu -q -rs -s -p no:cacheprovider 2>&1 | tee /tmp/gpu_check_tests.log
tests=${PIPESTATUS[0]}
timeout 120 "$py" scripts/gpu_bench.py 2>&1 | tee /tmp/gpu_check_bench.log
bench=${PIPESTATUS[0]}
set -e
echo
echo "== gpu_check summary ($(( $(date +%s) - start )) s)"
grep -E "passed|failed|skipped" /tmp/gpu_check_tests.log | tail -1
grep -E "^memory model" /tmp/gpu_check_tests.log || true
grep -E "^(fp32|bf16|plan)" /tmp/gpu_check_bench.log || true
echo "tests exit $tests, benchmark exit $bench"
exit $(( tests || bench ))
