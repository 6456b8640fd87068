"""`alignpipe report` and the report `alignpipe run` writes, through the real CLI in subprocesses."""

import json
import os
import subprocess
import sys
from pathlib import Path

from recorded import rlhf_run

ENGINE_TESTS = str(Path(__file__).resolve().parent.parent / "engine")


def cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "alignpipe", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120, env=env)


def test_report_command_writes_the_file(tmp_path):
    ws = tmp_path / "ws"
    run_id = rlhf_run(ws)
    r = cli("report", run_id[:15], "-w", ws, "-o", tmp_path / "r.html")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {tmp_path / 'r.html'} (")
    assert "<h2>Findings</h2>" in (tmp_path / "r.html").read_text()
    assert cli("report", "-w", ws).returncode == 0 and (ws / "report.html").exists()


def test_bad_input_is_one_line_exit_2(tmp_path):
    ws = tmp_path / "ws"
    rlhf_run(ws)
    cases = {("report", "nope", "-w", ws): "error: no run matches 'nope'; see `alignpipe runs`",
             ("report", "--compare", "x", "-w", ws): "error: report --compare: give two runs (RUN_A RUN_B), got 1",
             ("report", "a", "b", "-w", ws): "error: report: give at most one run, got 2 (a b); to put two side by "
                                              "side pass --compare",
             ("report", "-w", tmp_path / "none"): "no alignpipe workspace here"}
    for args, message in cases.items():
        r = cli(*args)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


PROBE = """
import json, sys
sys.argv = ["alignpipe", *sys.argv[1:]]
from alignpipe.cli import main
try:
    main()
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "heavy": sorted(m for m in ("torch", "matplotlib", "numpy") if m in sys.modules)}))
"""


def test_run_writes_the_report_and_a_cached_rerun_keeps_it_without_heavy_imports(tmp_path):
    spec = {"name": "p", "workspace": str(tmp_path / "ws"), "stages": {"count": {
        "uses": "teststages:counter", "params": {"steps": 3, "step_s": 0.0, "trace": str(tmp_path / "t")}}}}
    (tmp_path / "p.yaml").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": ENGINE_TESTS}

    def run(*extra):
        r = subprocess.run([sys.executable, "-c", PROBE, "run", tmp_path / "p.yaml", *extra], capture_output=True,
                           text=True, timeout=120, env=env)
        return r, json.loads(r.stdout.strip().splitlines()[-1])

    r, probe = run()
    report = tmp_path / "ws" / "report.html"
    assert probe["code"] == 0 and f"report {report}\n" in r.stdout and report.exists()
    first = report.read_text()
    r, probe = run()
    assert probe == {"code": 0, "heavy": []}
    assert "(kept: every stage was a cache hit of the run it shows)" in r.stdout and report.read_text() == first
    r, probe = run("--force", "count", "--json")  # re-executed: a new report, announced as a JSON event
    event = json.loads(r.stdout.strip().splitlines()[-3])  # then the result, then the probe
    assert event["event"] == "report" and event["kept"] is False and report.read_text() != first
