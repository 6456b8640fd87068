"""The CLI as a user meets it: real subprocesses, exit codes, stdout/stderr."""

import json

from engine_util import cli


def test_example_run_then_query_commands(tmp_path):
    ws = tmp_path / "ws"
    r = cli("run", "--example", "-w", ws)
    assert r.returncode == 0, r.stderr
    assert "report" in r.stdout and "4 done" in r.stdout
    r = cli("run", "--example", "-w", ws, "--json")
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["state"] for e in events if e["event"] == "stage"] == ["cached"] * 4
    assert events[-1]["event"] == "result" and events[-1]["status"] == "done"
    assert "3200 words" in events[-1]["headlines"]["report"]

    arts = json.loads(cli("artifacts", "-w", ws, "--json").stdout)
    assert sorted(a["producer"]["stage"] for a in arts) == ["chars", "corpus", "report", "words"]
    shown = json.loads(cli("show", "report", "-w", ws, "--json").stdout)
    assert shown["manifest"]["kind"] == "report" and (tmp_path / shown["path"]).exists()
    tree = json.loads(cli("lineage", "report", "-w", ws, "--json").stdout)
    assert tree["inputs"]["words"]["inputs"]["text"]["stage"] == "corpus"
    assert cli("tag", "v1", "report", "-w", ws).returncode == 0
    assert json.loads(cli("show", "v1", "-w", ws, "--json").stdout)["manifest"]["id"] == shown["manifest"]["id"]
    status = json.loads(cli("status", "-w", ws, "--json").stdout)
    assert {s["state"] for s in status["stages"].values()} == {"cached"}
    assert len(json.loads(cli("runs", "-w", ws, "--json").stdout)) == 2
    assert cli("verify", "-w", ws).stdout.strip().endswith("4 ok, 0 corrupt")
    assert "[words] resuming" not in cli("logs", "words", "-w", ws).stdout


def test_gc_removes_superseded_artifacts_but_keeps_tags_and_lineage(tmp_path, write_pipeline):
    ws = tmp_path / "ws"

    def spec(lines):
        return write_pipeline({"name": "g", "workspace": str(ws), "stages": {
            "corpus": {"uses": "example.corpus", "params": {"lines": lines}},
            "words": {"uses": "example.count", "inputs": {"text": "corpus.out"}}}})

    assert cli("run", spec(10), "-q").returncode == 0
    old = json.loads(cli("show", "words", "-w", ws, "--json").stdout)["manifest"]["id"]
    assert cli("run", spec(20), "-q").returncode == 0
    assert cli("run", spec(30), "-q").returncode == 0
    assert cli("tag", "keep", old, "-w", ws).returncode == 0
    dry = cli("gc", "--dry-run", "-w", ws)
    assert "would remove 2 artifacts" in dry.stdout
    assert len(json.loads(cli("artifacts", "-w", ws, "--json").stdout)) == 6
    cli("gc", "-w", ws)
    left = json.loads(cli("artifacts", "-w", ws, "--json").stdout)
    assert len(left) == 4  # the latest run's two, the tagged one and its corpus
    result = json.loads(cli("run", spec(30), "-q", "--json").stdout.splitlines()[-1])
    assert {s["state"] for s in result["stages"].values()} == {"cached"}


def test_metrics_of_a_stage_as_table_json_and_plot(tmp_path, write_pipeline):
    ws = tmp_path / "ws"
    spec = write_pipeline({"name": "m", "workspace": str(ws), "stages": {"n": {
        "uses": "teststages:counter", "params": {"trace": str(tmp_path / "t"), "steps": 3, "step_s": 0.0}}}})
    assert cli("run", spec, "-q").returncode == 0
    assert json.loads(cli("metrics", "n", "-w", ws, "--json").stdout) == {"loss": [[0, 1.0], [1, 0.5], [2, 1 / 3]]}
    r = cli("metrics", "n", "-w", ws, "-m", "loss", "--plot", tmp_path / "m.png")
    assert r.returncode == 0 and "loss" in r.stdout and (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    r = cli("metrics", "n", "-w", ws, "-m", "kl")
    assert r.returncode == 2 and "logged no metric ['kl']; it logged: loss" in r.stderr


def test_query_errors_are_clean(tmp_path):
    r = cli("status", "-w", tmp_path / "nothing")
    assert r.returncode == 2 and "no alignpipe workspace here" in r.stderr and "Traceback" not in r.stderr
    cli("run", "--example", "-w", tmp_path / "ws", "-q")
    r = cli("show", "zzzz", "-w", tmp_path / "ws")
    assert r.returncode == 2 and "is no artifact id, id prefix, tag or stage.output" in r.stderr
    r = cli("run", "--example", "-w", tmp_path / "ws", "--only", "nosuch")
    assert r.returncode == 2 and "no stage named 'nosuch'" in r.stderr


def test_manual_mode_chains_stages_on_explicit_paths(tmp_path):
    corpus, counts = tmp_path / "corpus", tmp_path / "counts"
    r = cli("stage", "run", "example.corpus", "--param", "lines=30", "--out", corpus, "--seed", "3")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["params"] == {"lines": 30, "words_per_line": 8} and manifest["producer"]["seed"] == 3
    assert len((corpus / "corpus.txt").read_text().splitlines()) == 30
    r = cli("stage", "run", "example.count", "-i", f"text={corpus}", "-p", "unit=chars", "-o", counts)
    assert r.returncode == 0, r.stderr
    m2 = json.loads((counts / "manifest.json").read_text())
    assert m2["inputs"] == {"text": {"id": manifest["id"]}} and m2["summary"]["total"] > 0
    # an external (non-artifact) input is hashed and recorded as external
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "corpus.txt").write_text("a b\nc\n")
    assert cli("stage", "run", "example.count", "-i", f"text={raw}", "-o", tmp_path / "c2").returncode == 0
    m3 = json.loads((tmp_path / "c2" / "manifest.json").read_text())
    assert m3["inputs"]["text"]["external"] == str(raw)
    r = cli("stage", "run", "example.count", "-p", "unit=bytes", "-i", f"text={raw}", "-o", tmp_path / "c3")
    assert r.returncode == 2 and "unit" in r.stderr and "Traceback" not in r.stderr


def test_stage_run_from_a_self_contained_task_file(tmp_path):
    """What the Ray executor and the exporters call: everything comes from the task file."""
    from alignpipe.pipeline.entry import Task
    from alignpipe.pipeline.store import Store

    ws = tmp_path / "ws"
    task = Task(stage="corpus", uses="example.corpus", params={"lines": 5}, seed=1, inputs={},
                work_dir=str(ws / "work" / "fp0"), store=str(ws), fingerprint="fp0",
                result=str(tmp_path / "result.json"), events=str(tmp_path / "events.jsonl"))
    (tmp_path / "task.json").write_text(task.model_dump_json())
    r = cli("stage", "run", "--task", tmp_path / "task.json")
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "done"
    store = Store(ws)
    assert store.lookup("fp0") == result["outputs"]
    assert store.get(result["outputs"]["out"]).manifest["producer"]["seed"] == 1
