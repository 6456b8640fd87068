"""`python -m benchmarks [NAME ...]`: run all or some benchmarks, save their results, rewrite docs/benchmarks.md."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import benchmarks
from benchmarks import peers, report
from benchmarks.harness import REGISTRY, Bench, save


def discover() -> None:
    """Import every module of the package so its @benchmark registers (no central list to keep in sync)."""
    skip = {"__main__", "harness", "report", "peers", "plots"}
    for m in pkgutil.iter_modules(benchmarks.__path__):
        if m.name not in skip and not m.name.startswith("_"):
            importlib.import_module(f"benchmarks.{m.name}")


def main(argv: list[str] | None = None) -> int:
    discover()
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(sorted(REGISTRY))}")
    ap.add_argument("--list", action="store_true", help="list benchmarks and exit")
    ap.add_argument("--doc", action="store_true", help="only rewrite docs/benchmarks.md from saved results")
    ap.add_argument("--repeats", type=int, default=5, help="minimum repeats for every row (default 5)")
    ap.add_argument("--wait-quiet", type=float, default=15.0, metavar="S",
                    help="per measurement, seconds to idle after a busy sample waiting for others to go quiet")
    ap.add_argument("--workdir", default=None,
                    help="scratch directory (default: a fresh temp dir, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args(argv)

    if args.list:
        for spec in sorted(REGISTRY.values(), key=lambda s: s.order):
            print(f"{spec.name:16s} {spec.title}" + (f"  [peers: {', '.join(spec.peers)}]" if spec.peers else ""))
        return 0
    failed: list[str] = []
    if not args.doc:
        unknown = [n for n in args.names if n not in REGISTRY]
        if unknown:
            print(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(sorted(REGISTRY))}", file=sys.stderr)
            return 2
        names = args.names or [s.name for s in sorted(REGISTRY.values(), key=lambda s: s.order)]
        scratch = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="alignpipe-bench-"))
        for name in names:
            spec = REGISTRY[name]
            print(f"== {name}: {spec.title}", file=sys.stderr, flush=True)
            env_extra = {}
            for peer in spec.peers:
                peers.ensure(peer)
                env_extra[peer] = peers.version(peer)
            wd = scratch / name
            shutil.rmtree(wd, ignore_errors=True)
            wd.mkdir(parents=True)
            b = Bench(name, wd, repeats=args.repeats, wait_quiet_s=args.wait_quiet)
            started = time.time()
            try:
                spec.fn(b)
            except Exception:  # one broken benchmark must not lose the others' results
                traceback.print_exc()
                failed.append(name)
                continue
            print(f"   saved {save(spec, b, started, env_extra)} ({time.time() - started:.0f} s)", file=sys.stderr)
        if not (args.keep or args.workdir):
            shutil.rmtree(scratch, ignore_errors=True)
        if failed:
            print(f"failed: {', '.join(failed)} (their previous results, if any, are kept)", file=sys.stderr)
    print(f"wrote {report.write()}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
