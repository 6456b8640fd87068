"""The HTML report of the default run: how long it takes to write, how big it is, what it costs `alignpipe run`.

- **Generation**: `alignpipe report -w WS -o FILE` as a subprocess (the whole command a user types: interpreter,
  imports, journal and manifests, SVG, write) and `alignpipe.report.write_report` in-process (the work alone),
  on the default pipeline's finished workspace (benchmarks/_runs/rlhf-ws, the run the training benchmarks share).
  Target: < 2 s. The file's size is recorded too (target: < 3 MB).
- **The hook's cost on a no-op rerun**: `alignpipe run -w WS -q` on the finished workspace (every stage a cache
  hit, the report kept) vs the same command with the report hook switched off, interleaved. After a run that
  executed something the hook writes the report: then it costs what `write_report` in-process costs.
No peer: the figures are absolute (and the no-op rerun's own cost is in the orchestration benchmark).
"""

from __future__ import annotations

import sys

from benchmarks import _fixtures as fx
from benchmarks.harness import Bench, Metric, benchmark, sh

TARGET_S = 2.0
SECONDS = Metric("s", "lower")
NO_HOOK = ("import sys; import alignpipe.report.cli as r; r.after_run = lambda *a: None; "
           "from alignpipe.cli import main; sys.argv[0] = 'alignpipe'; main()")


@benchmark("html_report", title="HTML report: generation time and size, cost to a no-op rerun", order=45)
def run(b: Bench) -> None:
    from alignpipe.report import write_report

    fx.rlhf_artifacts(until="evaluate")  # the default pipeline, finished (cached after the first call)
    ws = fx.WORKSPACE
    out = b.workdir / "report.html"
    env = fx.stage_env()
    b.figure("alignpipe report (whole command)", SECONDS,
             lambda: sh([*fx.alignpipe_exe(), "report", "-w", str(ws), "-o", str(out)], env=env) and None,
             note=f"target < {TARGET_S:g} s")
    b.figure("write_report in-process (journal, manifests, SVG, write)", SECONDS,
             lambda: write_report(ws, out=out) and None, repeats=9)
    size = out.stat().st_size
    b.config(workspace="the default pipeline's, finished (benchmarks/_runs/rlhf-ws)", report_bytes=size,
             report_kb=round(size / 1024, 1), target_s=TARGET_S, target_bytes=3 * 2**20)

    rerun = [*fx.alignpipe_exe(), "run", "-w", str(ws), "-q"]
    sh(rerun, env=env)  # the first rerun writes a report of the cached run; later ones keep it
    b.compare("no-op rerun of the default pipeline, report kept", SECONDS,
              ours=lambda: sh(rerun, env=env) and None,
              peer=("the same, report hook off", lambda: sh([sys.executable, "-c", NO_HOOK, "run", "-w", str(ws),
                                                             "-q"], env=env) and None), repeats=9)
