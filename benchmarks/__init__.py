"""alignpipe's benchmark suite: alignpipe side by side with the tools a user would otherwise pick.

    bash benchmarks/setup_peers.sh          # peer tools (DVC, TRL) into their own venvs, once
    python -m benchmarks                    # run every benchmark, write docs/benchmarks.md
    python -m benchmarks orchestration      # run a subset; the other results are kept
    python -m benchmarks --doc              # only regenerate docs/benchmarks.md from benchmarks/results/

Run on demand, never by the test suite. Each benchmark module registers itself with `@benchmark(...)`
(see harness.py), measures alignpipe (A) and the peer (B) interleaved A B A B …, and leaves its figures
in benchmarks/results/<name>.json, from which report.py writes docs/benchmarks.md.
"""

import os

from alignpipe.pipeline.cpu import SPIN_COUNT  # torch-free

# Before anything imports torch: the OpenMP wait policy alignpipe's stage processes choose on a quiet machine
# (alignpipe.pipeline.cpu), for this process and, through _fixtures.worker_env, for both sides' workers. The
# harness keeps only samples taken while the machine was quiet, which is where this policy applies.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
