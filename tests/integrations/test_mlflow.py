"""MLflow tracking and registry against a real `mlflow server` (SQLite backend, served artifacts, free port) and a
local SQLite URI, after the tiny RLHF pipeline. The server runs from .venvs/mlflow-server (built on first use)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from integ_util import cli
from mlflow_server import MlflowServer, side_env

from alignpipe import api
from alignpipe.api import Workspace
from pipelines import MINI, rlhf_spec

REGISTER = {"sft.model": "tiny-sft", "reward.model": "tiny-rm", "ppo.policy": "tiny-policy"}
STAGES = set(rlhf_spec(Path("ws"), MINI)["stages"])  # every stage of the pipeline


@pytest.fixture(scope="session")
def mlflow_bin() -> Path:
    return side_env("mlflow-server")


@pytest.fixture(scope="module")
def server(mlflow_bin, tmp_path_factory):
    s = MlflowServer(mlflow_bin, tmp_path_factory.mktemp("mlflow-server"))
    yield s
    s.kill()


def client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def runs_of(uri: str, experiment: str) -> tuple[list, list]:
    """(parent runs, stage runs) of an experiment, oldest first."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = sorted(c.search_runs([exp.experiment_id], max_results=1000), key=lambda r: r.info.start_time)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


@pytest.fixture(scope="module")
def tracked(server, tmp_path_factory):
    """The tiny RLHF pipeline run once with tracking and registration, then again (all cached)."""
    ws = tmp_path_factory.mktemp("tracked") / "ws"
    spec = rlhf_spec(ws, MINI, tracking={"mlflow": server.uri, "experiment": "tracked", "registry": REGISTER,
                                        "alias": "candidate"})
    first = api.run(api.from_dict(spec))
    assert first.status == "done", {n: s.error for n, s in first.stages.items() if s.error}
    again = api.run(api.from_dict(spec))
    return ws, first, again


def test_one_parent_run_and_one_child_per_stage_with_params_tags_and_files(server, tracked):
    ws, first, _ = tracked
    parents, children = runs_of(server.uri, "tracked")
    parent = next(p for p in parents if p.data.tags["alignpipe.run_id"] == first.run_id)
    assert parent.info.status == "FINISHED"
    mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
    assert sorted(c.data.tags["alignpipe.stage"] for c in mine) == sorted(STAGES)
    assert all(c.data.tags["alignpipe.cache_hit"] == "false" and c.info.status == "FINISHED" for c in mine)
    ppo = next(c for c in mine if c.data.tags["alignpipe.stage"] == "ppo")
    w = Workspace(ws)
    att = w.journal.last_attempt("ppo", executed=True)
    assert ppo.data.tags["alignpipe.fingerprint"] == att.fingerprint
    assert ppo.data.tags["alignpipe.output.policy"] == first.stages["ppo"].outputs["policy"]
    assert ppo.data.tags["alignpipe.input.reward_model"] == first.stages["reward"].outputs["model"]
    assert ppo.data.tags["alignpipe.lineage.sft.model"] == first.stages["sft"].outputs["model"]
    assert ppo.data.tags["alignpipe.code_version"] and ppo.data.tags.get("mlflow.source.git.commit")
    assert ppo.data.params["rollouts"] == str(MINI["ppo"]["rollouts"]) and ppo.data.params["kl_control"] == "adaptive"
    files = {f.path for d in ("logs", "summary") for f in client(server.uri).list_artifacts(ppo.info.run_id, d)}
    assert {"logs/ppo-1.log", "summary/policy.summary.json", "summary/policy.headline.md"} <= files


def test_the_ppo_metric_series_has_every_step_the_journal_has(server, tracked):
    ws, first, _ = tracked
    parents, children = runs_of(server.uri, "tracked")
    parent = next(p for p in parents if p.data.tags["alignpipe.run_id"] == first.run_id)
    ppo = next(c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id
               and c.data.tags["alignpipe.stage"] == "ppo")
    journal = Workspace(ws).metrics("ppo")
    assert {"score", "kl", "beta", "clipfrac", "value_loss"} <= set(journal)
    c = client(server.uri)
    for name, points in journal.items():
        history = sorted((m.step, m.value) for m in c.get_metric_history(ppo.info.run_id, name))
        assert history == sorted(points), name  # doubles both ways: exact
    assert [s for s, _ in journal["kl"]] == list(range(1, MINI["ppo"]["rollouts"] + 1))


def test_three_models_are_registered_with_lineage_and_the_rerun_adds_no_training(server, tracked):
    ws, first, again = tracked
    c = client(server.uri)
    for ref, name in REGISTER.items():
        versions = c.search_model_versions(f"name = '{name}'")
        assert len(versions) == 1, f"{name}: registered again by the cached rerun"
        mv = c.get_model_version_by_alias(name, "candidate")
        stage, _, out = ref.partition(".")
        assert mv.tags["alignpipe.artifact_id"] == first.stages[stage].outputs[out]
        assert mv.tags["alignpipe.lineage.sft.model"] == first.stages["sft"].outputs["model"]
        assert mv.tags["alignpipe.run_id"] == first.run_id
    assert c.get_model_version_by_alias("tiny-rm", "candidate").tags["alignpipe.role"] == "Rφ"
    assert c.get_model_version_by_alias("tiny-policy", "candidate").tags["alignpipe.lineage.reward.model"] == \
        first.stages["reward"].outputs["model"]
    # the rerun: a parent of its own, every stage a cache hit with no metrics
    parents, children = runs_of(server.uri, "tracked")
    rerun = next(p for p in parents if p.data.tags["alignpipe.run_id"] == again.run_id)
    cached = [ch for ch in children if ch.data.tags["mlflow.parentRunId"] == rerun.info.run_id]
    assert sorted(ch.data.tags["alignpipe.stage"] for ch in cached) == sorted(STAGES)
    assert all(ch.data.tags["alignpipe.cache_hit"] == "true" and not ch.data.metrics for ch in cached)
    assert sum(ch.data.tags["alignpipe.cache_hit"] == "false" for ch in children) == len(STAGES)


def test_the_registered_reward_model_scores_text_like_the_hf_model(server, tracked):
    import mlflow
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    ws, first, _ = tracked
    mlflow.set_tracking_uri(server.uri)
    scorer = mlflow.pyfunc.load_model("models:/tiny-rm@candidate")
    path = Workspace(ws).show("reward").path
    tok, rm = AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification.from_pretrained(path)
    texts = ["Review of the lamp: It is great." + tok.eos_token, "Review of the mug: Broken." + tok.eos_token]
    got = scorer.predict(texts)["score"].tolist()
    with torch.no_grad():
        want = [float(rm(**tok(t, return_tensors="pt")).logits[0, 0]) for t in texts]
    assert got == pytest.approx(want, abs=1e-5)
    card = mlflow.artifacts.download_artifacts(f"{scorer.metadata.artifact_path and 'models:/tiny-rm@candidate'}"
                                               "/model_card.md")
    assert "**Normalization.**" in Path(card).read_text()


def test_register_twice_returns_the_existing_version_and_models_lists_it(server, tracked):
    ws, first, _ = tracked
    res = cli("register", "ppo.policy", "--name", "tiny-policy", "--mlflow", server.uri, "-w", str(ws))
    assert res.returncode == 0, res.stderr
    assert "already registered: πRLHF ppo.policy" in res.stdout and "tiny-policy version 1" in res.stdout
    listed = cli("models", "tiny-policy", "--mlflow", server.uri)
    assert listed.returncode == 0 and first.stages["ppo"].outputs["policy"][:12] in listed.stdout
    assert "candidate" in listed.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["models", "no-such-model"], r"no registered model 'no-such-model'; registered: .*tiny-policy"),
    (["register", "data.demos", "--name", "x"], r"data.demos is a dataset artifact .* not a model"),
    (["register", "evaluate", "--name", "x"], r"evaluate is a report artifact .* not a model"),
], ids=["unknown-registered-model", "dataset", "report"])
def test_bad_input_is_one_line_exit_2(server, tracked, args, message):
    ws, _, _ = tracked
    res = cli(*args, "--mlflow", server.uri, *(["-w", str(ws)] if args[0] == "register" else []))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert re.search(message, res.stderr), res.stderr


def test_local_sqlite_uri_tracks_and_registers_without_a_server(tiny_ws, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    res = cli("run", "--force", "ppo", "--mlflow", uri, "-q", "-w", str(tiny_ws),
              str(_spec_file(tiny_ws, tmp_path)), cwd=cwd)
    assert res.returncode == 0, res.stderr
    parents, children = runs_of(uri, "rlhf-default")
    assert len(parents) == 1 and len(children) == len(STAGES)
    trained = [c for c in children if c.data.tags["alignpipe.cache_hit"] == "false"]
    assert [c.data.tags["alignpipe.stage"] for c in trained] == ["ppo"]
    assert client(uri).get_metric_history(trained[0].info.run_id, "kl")
    reg = cli("register", "reward.model", "--name", "rm", "--alias", "candidate", "--mlflow", uri,
              "-w", str(tiny_ws), cwd=cwd)
    assert reg.returncode == 0 and "registered: Rφ reward.model" in reg.stdout, reg.stderr
    assert not any(cwd.iterdir())  # artifacts next to the database, not in MLflow's default ./mlruns of the cwd
    assert any((tmp_path / "mlartifacts").rglob("ppo-1.log"))


def _spec_file(ws: Path, tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(rlhf_spec(ws, MINI)))
    return path


def test_killing_the_server_mid_run_warns_once_and_the_journal_keeps_every_metric(mlflow_bin, tiny_ws, tmp_path,
                                                                                   capfd):
    server = MlflowServer(mlflow_bin, tmp_path / "doomed")
    events = []

    def report(event):  # kill the server as PPO starts training: everything after that fails to send
        events.append(event)
        if event.get("stage") == "ppo" and event.get("state") == "running":
            server.kill()

    try:
        result = api.run(api.from_dict(rlhf_spec(tiny_ws, MINI)), force=("ppo",), report=report, mlflow=server.uri)
    finally:
        server.kill()
    assert result.status == "done"
    err = capfd.readouterr().err
    assert err.count("warning: MLflow tracking at") == 1, err
    assert "its journal keeps every metric" in err
    sent = [e for e in events if e.get("event") == "metrics" and e["stage"] == "ppo"]
    assert len(sent) == MINI["ppo"]["rollouts"]
    rows = Workspace(tiny_ws).journal.db.execute(
        "SELECT name, COUNT(*) FROM metrics WHERE run_id = ? AND stage = 'ppo' GROUP BY name", (result.run_id,))
    assert dict(rows) == {k: MINI["ppo"]["rollouts"] for k in sent[0]["values"]}
