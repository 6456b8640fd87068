"""MLflow: tracking of pipeline runs, and the model registry.

Tracking (`tracking: {mlflow: URI}` in the spec, `alignpipe run --mlflow URI`, or $ALIGNPIPE_MLFLOW): `Tracker`
wraps the run's reporter. The runner hands it the same events it shows (plan, stage state changes, metrics); they
go on a queue that a background thread drains into MLflow in batches, so the runner never waits for the server
and training, which happens in the stage processes, never sees it. One parent run per pipeline run; one nested
run per stage execution (params, metric series with their steps, tags for artifact ids, fingerprint, code
version and lineage, the stage log and summary as artifacts); a cache hit is a nested run tagged
`alignpipe.cache_hit = true` with no metrics: nothing was trained. If the server cannot be reached the tracker
warns once and stops tracking that run; the stages never notice, and the journal keeps every metric.

Registry (`alignpipe register REF --name NAME`, or `tracking: {registry: {stage.output: NAME}}`): a model artifact
becomes a registered model version, logged with the transformers flavour (text-generation for causal LMs,
text-classification with the raw score for reward models), the model card attached, lineage as version tags.
A version is found again by its `alignpipe.artifact_id` tag, so registering an artifact twice returns it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignpipe.integrations.artifact import ModelArtifact, model_artifact
from alignpipe.pipeline.errors import UserError

INSTALL = "pip install 'alignpipe[mlflow]'"
ENV = "ALIGNPIPE_MLFLOW"
BATCH = 1000  # MLflow's log_batch takes at most 1000 metrics per call
FLUSH_EVERY = 2.0  # seconds the MLflow thread lets events gather between two sends (a stage's end flushes now)
BACKGROUND_NICE = 19  # the MLflow thread's niceness: on a busy machine it takes only CPU the stages leave idle
TAG = "alignpipe."
PARAM_MAX = 6000  # MLflow's limit on a param value
STATUS = {"done": "FINISHED", "cached": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def _mlflow() -> Any:
    """The mlflow module, configured for unattended use: no telemetry, a dead server fails fast."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # mlruns/ dirs: deprecated by MLflow, still accepted
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout may be --json events
    try:
        import mlflow
    except ImportError:
        raise UserError(f"MLflow tracking needs the mlflow client: {INSTALL}") from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "View run at ..." lines in the run's output
    return mlflow


def experiment_id(client: Any, uri: str, name: str) -> str:
    """The id of experiment `name`, created if new. With a local database URI (sqlite:///PATH) its artifacts go
    next to the database (PATH's directory, mlartifacts/), not into MLflow's default ./mlruns of whatever
    directory the command ran in."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def tracking_uri(cli_value: str | None, spec_value: str | None) -> str | None:
    """--mlflow, else $ALIGNPIPE_MLFLOW, else the spec's `tracking.mlflow` (None: no tracking)."""
    return cli_value or os.environ.get(ENV) or spec_value


@contextmanager
def tracked(pipeline: Any, workspace: Path, report: Any, uri: str | None) -> Iterator[Any]:
    """The reporter a run should use: `report` itself, or a Tracker around it when a tracking URI is set."""
    spec = pipeline.spec.tracking
    uri = tracking_uri(uri, spec.mlflow if spec else None)
    if uri is None:
        yield report
        return
    _mlflow_installed()
    register = spec.registry if spec else {}
    _check_register(pipeline, register)
    tracker = Tracker(uri, pipeline, workspace, report, experiment=spec.experiment if spec else None,
                      register=register, alias=spec.alias if spec else None)
    try:
        yield tracker
    finally:
        tracker.close()


def _lower_priority() -> None:
    """Make the calling thread yield the CPU to everything else on the machine. Tracking shares the cores with the
    stage processes it reports on (importing mlflow takes ~2.4 s of CPU), and a stage picks its OpenMP wait policy
    from the load it sees while it starts (pipeline.cpu); at nice 19 this thread runs when the stages wait, and the
    stage's probe does not count it. Without this, a quiet machine's SFT stage ran 0.72x as fast with tracking on
    (benchmarks/mlflow_tracking.py). Linux schedules threads as tasks with their own niceness; elsewhere a no-op."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except (AttributeError, OSError):
        pass


def _mlflow_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise UserError(f"MLflow tracking needs the mlflow client: {INSTALL}")


def _check_register(pipeline: Any, register: dict[str, str]) -> None:
    problems = []
    for ref, name in register.items():
        where = f"{pipeline.source}: tracking.registry.{ref}"
        stage, _, out = ref.partition(".")
        st = pipeline.stages.get(stage)
        if st is None or out not in st.definition.outputs:
            have = [f"{n}.{o}" for n, s in pipeline.stages.items() for o, k in s.definition.outputs.items()
                    if k == "model"]
            problems.append(f"{where}: no stage output {ref!r}; model outputs: {', '.join(have) or 'none'}")
        elif st.definition.outputs[out] != "model":
            problems.append(f"{where}: {ref} is a {st.definition.outputs[out]}, not a model; only models register")
        elif not name or "'" in name or "/" in name:
            problems.append(f"{where}: registered model name {name!r} is invalid; use letters, digits, - _ .")
    if problems:
        raise UserError(problems)


def _flat(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    """Nested params as MLflow params: {'a': {'b': 1}} -> {'a.b': '1'}."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        text = value if isinstance(value, str) else json.dumps(value)
        out[prefix] = text[:PARAM_MAX]
    return out


# ---------------------------------------------------------------------------------------------------------------
# tracking


@dataclass
class _StageRun:
    run_id: str
    attempts: int = 0


class Tracker:
    """A reporter wrapper: passes every event on to `inner` and queues it for the MLflow thread."""

    def __init__(self, uri: str, pipeline: Any, workspace: Path, inner: Any, *, experiment: str | None = None,
                 register: dict[str, str] | None = None, alias: str | None = None):
        self.uri, self.pipeline, self.ws, self.inner = uri, pipeline, Path(workspace), inner
        self.experiment = experiment or pipeline.name
        self.register, self.alias = register or {}, alias
        self.events: queue.Queue = queue.Queue()
        self.failure: str | None = None
        self.warned = False
        self.parent: str | None = None
        self.stages: dict[str, _StageRun] = {}
        self.outputs: dict[str, dict[str, str]] = {}
        self.states: dict[str, str] = {}
        self.registered: dict[str, tuple[str, str]] = {}  # stage.output -> (name, version)
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._work, name="alignpipe-mlflow", daemon=True)
        self.thread.start()

    # -- the runner's side: never blocks ------------------------------------------------------------------------
    def __call__(self, event: dict[str, Any]) -> None:
        if self.inner is not None:
            self.inner(event)
        if self.failure is None:
            self.events.put(dict(event))
        self._warn()

    def close(self, timeout: float = 300.0) -> None:
        """Flush what is queued, end the parent run, register the configured models (`inner` stays open)."""
        self.events.put(None)
        self.closing.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.failure = self.failure or f"still sending after {timeout:.0f} s"
        self._warn()

    def _warn(self) -> None:
        if self.failure and not self.warned:
            self.warned = True
            from rich.console import Console

            Console(stderr=True, soft_wrap=True, highlight=False).print(
                f"[yellow]warning:[/] MLflow tracking at {self.uri} stopped: {self.failure}. The run goes on; "
                f"its journal keeps every metric (`alignpipe metrics STAGE`)")

    # -- the MLflow thread ---------------------------------------------------------------------------------------
    def _work(self) -> None:
        _lower_priority()
        try:
            self.client = _mlflow().MlflowClient(tracking_uri=self.uri)
            done = False
            while not done:
                batch = [self.events.get()]
                if batch[0] is not None and batch[0].get("event") == "metrics":
                    self.closing.wait(FLUSH_EVERY)  # let a training stage's points gather: one send, not one each
                while True:  # everything queued meanwhile: one round trip per metric batch, not per event
                    try:
                        batch.append(self.events.get_nowait())
                    except queue.Empty:
                        break
                done = batch[-1] is None
                self._handle([e for e in batch if e is not None])
            self._finish()
        except Exception as e:  # noqa: BLE001 — any failure of the tracker must leave the run alone
            self.failure = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"

    def _handle(self, events: list[dict[str, Any]]) -> None:
        metrics: dict[str, list] = {}
        for ev in events:
            kind = ev.get("event")
            if kind == "plan":
                self._start_parent(ev)
            elif kind == "metrics":
                metrics.setdefault(ev["stage"], []).append(ev)
            elif kind == "stage":
                self._flush_metrics(metrics)  # a stage's metrics before its end
                self._stage(ev)
        self._flush_metrics(metrics)

    def _start_parent(self, ev: dict[str, Any]) -> None:
        from alignpipe.pipeline.entry import code_version

        exp_id = experiment_id(self.client, self.uri, self.experiment)
        self.exp_id = exp_id
        code = code_version()
        tags = {f"{TAG}run_id": ev["run_id"], f"{TAG}pipeline": self.pipeline.name,
                f"{TAG}source": str(self.pipeline.source), f"{TAG}workspace": ev["workspace"],
                f"{TAG}code_version": code.get("alignpipe", ""), f"{TAG}stages": ",".join(ev["stages"]),
                "mlflow.source.name": str(self.pipeline.source), "mlflow.source.type": "JOB"}
        if code.get("git"):
            tags["mlflow.source.git.commit"] = code["git"]
        run = self.client.create_run(exp_id, run_name=f"{self.pipeline.name} {ev['run_id']}", tags=tags)
        self.parent = run.info.run_id
        self.client.log_param(self.parent, "seed", str(self.pipeline.spec.seed))
        self.code = code

    def _stage(self, ev: dict[str, Any]) -> None:
        name, state = ev["stage"], ev["state"]
        self.states[name] = state
        if state == "running" and name not in self.stages:
            self.stages[name] = self._child(name, ev, cached=False)
        elif state == "cached":
            self.stages[name] = self._child(name, ev, cached=True)
            self._outputs(name, ev.get("outputs", {}))
            self.client.set_terminated(self.stages[name].run_id, "FINISHED")
        elif state == "running":
            self.stages[name].attempts = ev.get("attempt", 1)
        elif state in ("done", "failed", "interrupted") and name in self.stages:
            run = self.stages[name].run_id
            if state == "done":
                self._outputs(name, ev.get("outputs", {}))
            if ev.get("duration") is not None:
                self.client.log_metric(run, "duration_s", float(ev["duration"]))
            if ev.get("error"):
                self.client.set_tag(run, f"{TAG}error", ev["error"][-4000:])
            self._log_files(name, run, ev.get("attempt", 1))
            self.client.set_terminated(run, STATUS[state])

    def _child(self, name: str, ev: dict[str, Any], cached: bool) -> _StageRun:
        st = self.pipeline.stages[name]
        tags = {"mlflow.parentRunId": self.parent, f"{TAG}stage": name, f"{TAG}uses": st.spec.uses,
                f"{TAG}stage_version": str(st.definition.version), f"{TAG}cache_hit": str(cached).lower(),
                f"{TAG}code_version": self.code.get("alignpipe", "")}
        if ev.get("fingerprint"):
            tags[f"{TAG}fingerprint"] = ev["fingerprint"]
        if self.code.get("git"):
            tags["mlflow.source.git.commit"] = self.code["git"]
        run = self.client.create_run(self.exp_id, run_name=f"{name} (cached)" if cached else name, tags=tags)
        params = _flat("", st.params.model_dump(mode="json"), {})
        params["seed"] = str(st.seed)
        Metric, Param = self._entities()
        items = [Param(k, v) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params per call
            self.client.log_batch(run.info.run_id, params=items[i:i + 100])
        return _StageRun(run.info.run_id, ev.get("attempt", 1))

    def _entities(self) -> tuple[Any, Any]:
        from mlflow.entities import Metric, Param

        return Metric, Param

    def _flush_metrics(self, metrics: dict[str, list]) -> None:
        Metric, _ = self._entities()
        for stage, evs in metrics.items():
            if stage not in self.stages:
                continue
            items = [Metric(k, float(v), int(ev.get("t", time.time()) * 1000), int(ev["step"]))
                     for ev in evs for k, v in ev["values"].items()]
            for i in range(0, len(items), BATCH):
                self.client.log_batch(self.stages[stage].run_id, metrics=items[i:i + BATCH])
        metrics.clear()

    def _outputs(self, name: str, outputs: dict[str, str]) -> None:
        """Tags for the outputs: their ids, the ids of the inputs, and the lineage (stage.output -> id)."""
        from alignpipe.integrations.artifact import lineage_ids
        from alignpipe.pipeline.store import Store

        self.outputs[name] = outputs
        store = Store(self.ws)
        run = self.stages[name].run_id
        tags: dict[str, str] = {}
        for out, art_id in outputs.items():
            tags[f"{TAG}output.{out}"] = art_id
            manifest = store.get(art_id).manifest
            for inp, meta in manifest.get("inputs", {}).items():
                tags[f"{TAG}input.{inp}"] = meta["id"]
            for ref, up in lineage_ids(store, art_id).items():
                tags[f"{TAG}lineage.{ref}"] = up
            if manifest.get("producer", {}).get("run_id"):
                tags[f"{TAG}produced_by_run"] = manifest["producer"]["run_id"]
        self._tags(run, tags)

    def _tags(self, run: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run, tags=items[i:i + 100])

    def _log_files(self, name: str, run: str, attempts: int) -> None:
        """The stage's logs (every attempt) and its outputs' summaries as run artifacts."""
        from alignpipe.pipeline.store import Store

        store = Store(self.ws)
        logs = store.logs_root / self._run_id()
        for n in range(1, attempts + 1):
            log = logs / f"{name}-{n}.log"
            if log.is_file():
                self.client.log_artifact(run, str(log), "logs")
        for out, art_id in self.outputs.get(name, {}).items():
            summary = store.get(art_id).manifest.get("summary") or {}
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{out}.summary.json"
                path.write_text(json.dumps(summary, indent=1, sort_keys=True))
                self.client.log_artifact(run, str(path), "summary")
                if isinstance(summary.get("headline"), str):
                    head = Path(tmp) / f"{out}.headline.md"
                    head.write_text(summary["headline"])
                    self.client.log_artifact(run, str(head), "summary")

    def _run_id(self) -> str:
        return self.client.get_run(self.parent).data.tags[f"{TAG}run_id"]

    def _finish(self) -> None:
        if self.parent is None:
            return
        for name, st in self.stages.items():  # a stage still open (the runner was stopped): killed
            if self.states.get(name) == "running":
                self.client.set_terminated(st.run_id, "KILLED")
        states = set(self.states.values())
        status = "FAILED" if "failed" in states else "KILLED" if states & {"interrupted", "running"} else "FINISHED"
        self._register_outputs()
        self.client.set_terminated(self.parent, status)

    def _register_outputs(self) -> None:
        from alignpipe.pipeline.store import Store

        store = Store(self.ws)
        for ref, name in self.register.items():
            stage, _, out = ref.partition(".")
            art_id = self.outputs.get(stage, {}).get(out)
            if art_id is None:
                continue  # the stage did not finish in this run
            m = model_artifact(store, store.get(art_id), ref)
            version = register(m, name, self.uri, alias=self.alias, run_id=self.stages[stage].run_id)
            self.registered[ref] = (name, version.version)
            self.client.set_tag(self.parent, f"{TAG}registered.{ref}", f"{name}/{version.version}")


# ---------------------------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    created: bool  # False: the artifact was registered before, this is that version
    source: str
    alias: str | None


def register(m: ModelArtifact, name: str, uri: str, *, alias: str | None = None,
             run_id: str | None = None) -> Registered:
    """A registered model version of `m` under `name` (the existing one if this artifact has one already)."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.search_model_versions(f"name = '{_quote(name)}' and tags.`{TAG}artifact_id` = '{m.id}'")
    if found:
        mv, created = found[0], False
    else:
        mv, created = _log_and_register(mlflow, client, m, name, uri, run_id), True
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    return Registered(name, str(mv.version), created, mv.source, alias)


def versions(name: str, uri: str) -> list[dict[str, Any]]:
    """Versions of registered model `name`, newest first, with their alignpipe tags; UserError if there is none."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient(tracking_uri=uri)
    try:
        model = client.get_registered_model(_quote(name))
    except mlflow.exceptions.MlflowException:
        known = sorted(m.name for m in client.search_registered_models())
        raise UserError(f"{uri}: no registered model {name!r}; registered: {', '.join(known) or 'none'}") from None
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        tags = mv.tags or {}
        rows.append({"version": str(mv.version), "aliases": aliases.get(str(mv.version), []),
                     "artifact_id": tags.get(f"{TAG}artifact_id", ""), "role": tags.get(f"{TAG}role", ""),
                     "stage": tags.get(f"{TAG}stage", ""), "run_id": tags.get(f"{TAG}run_id", ""),
                     "tags": tags, "source": mv.source})
    return sorted(rows, key=lambda r: -int(r["version"]))


def _quote(name: str) -> str:
    if not name or "'" in name or "/" in name:
        raise UserError(f"registered model name {name!r} is invalid; use letters, digits, '-', '_' and '.'")
    return name


def version_tags(m: ModelArtifact) -> dict[str, str]:
    p = m.producer
    tags = {f"{TAG}artifact_id": m.id, f"{TAG}role": m.role.symbol, f"{TAG}stage": m.ref,
            f"{TAG}pipeline": str(p.get("pipeline")), f"{TAG}run_id": str(p.get("run_id")),
            f"{TAG}fingerprint": str(p.get("fingerprint")), f"{TAG}task": m.task,
            f"{TAG}code_version": " ".join(f"{k} {v}" for k, v in m.manifest.get("code", {}).items())}
    tags.update({f"{TAG}lineage.{ref}": i for ref, i in m.lineage.items()})
    norm = m.reward_normalization()
    if norm:
        tags[f"{TAG}normalization"] = json.dumps({k: norm[k] for k in ("bias", "gain", "folded")})
    return tags


def _log_and_register(mlflow: Any, client: Any, m: ModelArtifact, name: str, uri: str, run_id: str | None) -> Any:
    """Log `m` with the transformers flavour into `run_id` (or a new 'register' run) and register it."""
    import transformers
    from huggingface_hub import ModelCard
    from transformers.utils import logging as hf_logging

    from alignpipe.integrations.modelcard import model_card

    hf_logging.disable_progress_bar()
    auto = getattr(transformers, m.auto_class)
    components = {"model": auto.from_pretrained(str(m.path)),
                  "tokenizer": transformers.AutoTokenizer.from_pretrained(str(m.path))}
    # the reward model's raw head output is its score: no sigmoid (the pipeline's default for one label)
    model_config = {"function_to_apply": "none"} if m.task == "text-classification" else None
    import torch

    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"transformers=={transformers.__version__}"]
    mlflow.set_tracking_uri(uri)
    if run_id is None:  # `alignpipe register` outside a tracked run: a run of its own, in the pipeline's experiment
        exp_name = str(m.producer.get("pipeline") or "alignpipe")
        exp_id = experiment_id(client, uri, exp_name)
        run_id = client.create_run(exp_id, run_name=f"register {m.ref} {m.id[:12]}",
                                   tags={f"{TAG}artifact_id": m.id}).info.run_id
    with mlflow.start_run(run_id=run_id):  # ends FINISHED, as the run was before
        info = mlflow.transformers.log_model(
            transformers_model=components, name=m.ref.replace(".", "-"), task=m.task,
            model_card=ModelCard(model_card(m)), model_config=model_config, pip_requirements=requirements,
            metadata={"alignpipe_artifact_id": m.id, "alignpipe_role": m.role.symbol})
    return mlflow.register_model(info.model_uri, name, tags=version_tags(m))
