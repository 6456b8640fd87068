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

# Before anything imports torch: OpenMP threads that finished their work sleep instead of spinning, so a
# benchmark does not burn the shared machine's second core while it waits (and is not slowed by its own spin).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
