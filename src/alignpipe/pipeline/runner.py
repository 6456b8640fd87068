"""Run a validated pipeline: plan, cache checks, parallel stage processes in resource slots, retries, timeouts.

The runner is single-threaded: one loop starts ready stages, polls running ones, tails their events into
the journal and the progress display. Each stage runs in its own process group (`alignpipe stage run --task`)
so a crash, an OOM kill or os._exit fails that stage and not the runner; the runner's death takes its stage
processes with it (PR_SET_PDEATHSIG), and the next run resumes them from their checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignpipe.pipeline.entry import Task, TaskInput
from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.executors import Handle, LocalExecutor, RayExecutor
from alignpipe.pipeline.external import materialize
from alignpipe.pipeline.fingerprint import fingerprint
from alignpipe.pipeline.gates import check_gates
from alignpipe.pipeline.graph import ancestors, select
from alignpipe.pipeline.journal import Attempt, Journal, check_journal_url, record_journal_url
from alignpipe.pipeline.lease import workspace_lock
from alignpipe.pipeline.spec import External, Machine, Pipeline, Stage, StageRef
from alignpipe.pipeline.store import DamagedRef, MissingArtifact, Store, check_workspace, hash_tree, log_key

CACHE_HIT_CHECK = {"always": "full", "inputs": "stat", "never": "size"}  # verify mode -> store.check_files level

TERMINAL = {"done", "cached", "failed", "rejected", "skipped", "interrupted"}
BLOCKING = {"failed", "rejected", "skipped", "interrupted"}  # a stage in one of these states stops its descendants
LOG_TAIL_LINES = 30
LOG_MIRROR_S = 2.0


@dataclass
class RunOptions:
    workspace: str | None = None
    from_: str | None = None
    until: str | None = None
    only: str | None = None
    force: tuple[str, ...] = ()
    wait: bool = False  # wait for the workspace lock instead of refusing
    verify: str | None = None  # overrides the spec's `verify` (always, inputs, never)
    new_journal: bool = False  # move a damaged journal aside and start a new one
    journal: str | None = None  # a PostgreSQL journal's URL; overrides the spec's `journal`
    platform: str | None = None  # a workflow platform's task (`alignpipe stage exec`): shares the workspace lock
    platform_run_id: str | None = None
    retry_base_delay: float = field(default_factory=lambda: float(os.environ.get("ALIGNPIPE_RETRY_BASE_DELAY", "1.0")))
    kill_grace: float = 5.0


@dataclass
class StageState:
    name: str
    state: str = "pending"  # pending, ready, running, done, cached, failed, rejected (a gate), skipped, interrupted
    fingerprint: str | None = None
    inputs: dict[str, TaskInput] = field(default_factory=dict)  # resolved once its upstream is done
    outputs: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    error: str | None = None
    not_before: float = 0.0  # retry backoff


@dataclass
class RunResult:
    run_id: str
    status: str  # done, failed, interrupted
    workspace: Path
    stages: dict[str, StageState]

    @property
    def exit_code(self) -> int:
        return {"done": 0, "failed": 1, "interrupted": 130}[self.status]


Reporter = Callable[[dict[str, Any]], None]


@dataclass
class _Running:
    handle: Handle
    attempt_dir: Path
    log_path: Path
    started: float
    gpus: list[int]
    cpus: float
    events_offset: int = 0
    log_mirrored: tuple[float, int] = (0.0, -1)  # (when, size) the log was last mirrored to a bucket workspace
    kill_deadline: float | None = None
    reason: str | None = None  # "timeout" once the runner started stopping it for overrunning


class Runner:
    def __init__(self, pipeline: Pipeline, options: RunOptions, report: Reporter | None = None,
                 machine: Machine | None = None, executor: LocalExecutor | RayExecutor | None = None):
        self.p = pipeline
        self.o = options
        self.report = report or (lambda e: None)
        self.executor = executor or LocalExecutor()
        self.machine = machine or self.executor.machine()
        self.ws = pipeline.workspace(options.workspace)
        self.store = Store(self.ws)
        self.deps = {n: s.deps for n, s in pipeline.stages.items()}
        self.verify = options.verify or pipeline.spec.verify
        if self.verify not in CACHE_HIT_CHECK:
            raise UserError(f"--verify {self.verify!r}: expected one of {', '.join(CACHE_HIT_CHECK)}")
        for name in (options.from_, options.until, options.only, *options.force):
            if name is not None and name not in pipeline.stages:
                raise UserError(f"{pipeline.source}: no stage named {name!r}; stages: {', '.join(pipeline.order)}")

    # -- planning ----------------------------------------------------------------------------------------------
    def _plan(self) -> tuple[list[str], set[str], set[str]]:
        runnable, forced = select(self.deps, from_=self.o.from_, until=self.o.until, only=self.o.only,
                                  force=self.o.force)
        needed = set(runnable)
        for n in runnable:
            needed |= ancestors(self.deps, n)
        plan = [n for n in self.p.order if n in needed]
        return plan, runnable, forced

    def _external(self, journal: Journal, uri: str) -> tuple[str, str]:
        """(local path, content id) of an external input; hashes are cached by path, size and mtime."""
        path = materialize(uri, self.store.state)
        st = path.stat()
        size, mtime = _tree_stat(path) if path.is_dir() else (st.st_size, st.st_mtime_ns)
        cached = journal.external_id(str(path), size, mtime)
        if cached:
            return str(path), cached
        art_id = hash_tree(path)[0]
        journal.remember_external(str(path), size, mtime, art_id)
        return str(path), art_id

    def _input_ids(self, st: Stage, states: dict[str, StageState],
                   ext: dict[str, tuple[str, str]]) -> dict[str, TaskInput]:
        out = {}
        for name, src in st.inputs.items():
            if isinstance(src, StageRef):
                art_id = states[src.stage].outputs[src.output]
                # a bucket's artifacts have no shared path: the stage process fetches them into its machine's cache
                path = "" if self.store.remote else str(self.store.artifacts_dir / art_id)
                out[name] = TaskInput(path=path, id=art_id)
            else:
                local, art_id = ext[src.uri]
                out[name] = TaskInput(path=local, id=art_id, external=src.uri)
        return out

    # -- main loop ---------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        check_workspace(self.store)
        self.store.ensure()
        self.executor.prepare(self.store)
        journal_url = self.o.journal or self.p.spec.journal or os.environ.get("ALIGNPIPE_JOURNAL")
        if journal_url:
            record_journal_url(self.store, check_journal_url(journal_url))  # every machine finds it from now on
        lock = workspace_lock(self.store).acquire(wait=self.o.wait, shared=self.o.platform is not None)
        for note in getattr(lock, "notes", ()):
            self.report({"event": "warning", "stage": None, "message": note})
        try:
            journal = Journal(self.ws, new_if_damaged=self.o.new_journal, report=self.report, url=journal_url)
        except BaseException:
            lock.release()
            raise
        old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            run_id = journal.start_run(self.p.name, self.p.source, sys.argv, self.o.platform, self.o.platform_run_id)
            lock.name_run(run_id)
            result = self._loop(journal, run_id)
            journal.end_run(run_id, result.status)
            return result
        finally:
            signal.signal(signal.SIGTERM, old_term)
            journal.close()
            lock.release()

    def _loop(self, journal: Journal, run_id: str) -> RunResult:
        plan, runnable, forced = self._plan()
        ext = {s.uri: self._external(journal, s.uri) for n in plan for s in self.p.stages[n].inputs.values()
               if isinstance(s, External)}
        states = {n: StageState(n) for n in plan}
        journal.record_plan(run_id, plan)
        running: dict[str, _Running] = {}
        free_cpus = float(self.machine.cpus)
        free_mem = float(self.machine.memory or math.inf)
        free_gpus = list(range(self.machine.gpus))
        self.report({"event": "plan", "run_id": run_id, "workspace": str(self.ws), "stages": plan})
        try:
            while not all(s.state in TERMINAL for s in states.values()):
                self._resolve_pending(journal, run_id, plan, states, runnable, forced, ext)
                for name in plan:
                    s, st = states[name], self.p.stages[name]
                    if s.state != "ready" or time.time() < s.not_before:
                        continue
                    mem, cpus, ngpus = st.resources.total_memory, st.resources.total_cpus, st.resources.total_gpus
                    if cpus > free_cpus + 1e-9 or ngpus > len(free_gpus) or mem > free_mem:
                        continue  # a stage of several processes takes the slots of all of them
                    gpus, free_gpus = free_gpus[:ngpus], free_gpus[ngpus:]
                    free_cpus -= cpus
                    free_mem -= mem
                    running[name] = self._launch(journal, run_id, st, s, gpus)
                for name in list(running):
                    r = running[name]
                    self._pump_events(journal, run_id, states[name], r)
                    if self._check(journal, run_id, states[name], r):
                        free_cpus += r.cpus
                        free_mem += self.p.stages[name].resources.total_memory
                        free_gpus = sorted(free_gpus + r.gpus)
                        del running[name]
                self._skip_blocked(plan, states)
                backoff = any(s.state == "ready" and s.not_before > time.time() for s in states.values())
                time.sleep(0.05 if running or backoff else 0.0)  # a retry's backoff is waited, not spun
        except KeyboardInterrupt:
            self._interrupt(journal, run_id, states, running)
            return RunResult(run_id, "interrupted", self.ws, states)  # run() records the run's end
        status = "done" if all(s.state in ("done", "cached") for s in states.values()) else "failed"
        return RunResult(run_id, status, self.ws, states)

    def _resolve_pending(self, journal: Journal, run_id: str, plan: list[str], states: dict[str, StageState],
                         runnable: set[str], forced: set[str], ext: dict[str, tuple[str, str]]) -> None:
        """Compute fingerprints of stages whose inputs are known; cache hits finish here."""
        for name in plan:
            s, st = states[name], self.p.stages[name]
            if s.state != "pending" or any(states[d].state not in ("done", "cached") for d in st.deps):
                continue
            s.inputs = self._input_ids(st, states, ext)
            s.fingerprint = fingerprint(st.spec.uses, st.definition.version, st.params.model_dump(mode="json"),
                                        {k: v.id for k, v in s.inputs.items()}, st.seed)
            hit = self._cache_hit(name, s.fingerprint) if (st.spec.cache or name not in runnable) else None
            if hit is not None and name not in forced:
                s.state, s.outputs = "cached", hit
                self._check_gates(st, s)
                now = time.time()
                journal.record_attempt(Attempt(run_id, name, 0, s.state, now, now, None, s.error, True, s.fingerprint,
                                               hit, socket.gethostname(), None))
                self.report({"event": "stage", "stage": name, "state": s.state, "outputs": hit,
                             "fingerprint": s.fingerprint, **({"error": s.error} if s.error else {})})
            elif name not in runnable:
                hint = (f"run stage {name!r} first (its {self.o.platform} task)" if self.o.platform
                        else "run without --only first")
                raise UserError(f"{self.p.source}: stage {name!r} has no cached output for its current inputs and "
                                f"params, and the selection (--only/--until) does not allow running it; {hint}")
            else:
                s.state = "ready"

    def _cache_hit(self, name: str, fp: str) -> dict[str, str] | None:
        """The outputs a fingerprint produced, checked at the verify mode's level. A corrupt output is quarantined
        and a damaged ref ignored, with a warning: either way the stage is recomputed, never reused."""
        try:
            hit = self.store.lookup(fp)
        except DamagedRef as e:
            self.report({"event": "warning", "stage": name, "message": str(e)})
            return None
        if hit is None:
            return None
        level = CACHE_HIT_CHECK[self.verify]
        for art_id in hit.values():
            try:
                problems = self.store.verify(art_id, level=level)
            except MissingArtifact:  # removed since (gc): a miss, nothing to quarantine
                return None
            if problems:
                where = self.store.quarantine(art_id, problems)
                self.report({"event": "warning", "stage": name, "message": (
                    f"cached artifact {art_id[:12]} is corrupt ({'; '.join(problems)}); moved to {where}, "
                    "recomputing the stage")})
                return None
        return hit

    def _check_gates(self, st: Stage, s: StageState) -> None:
        """A finished or cached stage whose gates fail becomes `rejected` (its outputs stay published)."""
        if not st.spec.gates:
            return
        summaries = [self.store.get(i).manifest.get("summary", {}) for i in s.outputs.values()]
        failed = check_gates(st.spec.gates, summaries)
        if failed:
            arts = ", ".join(i[:12] for i in s.outputs.values())
            s.state, s.error = "rejected", (f"{'; '.join(failed)}. Its output ({arts}) is kept but nothing "
                                            "downstream runs; change its inputs or params, or the gate")

    def _skip_blocked(self, plan: list[str], states: dict[str, StageState]) -> None:
        for name in plan:
            s = states[name]
            if s.state == "pending" and any(states[d].state in BLOCKING for d in self.p.stages[name].deps):
                s.state, s.error = "skipped", "an upstream stage failed"
                self.report({"event": "stage", "stage": name, "state": "skipped"})

    def _launch(self, journal: Journal, run_id: str, st: Stage, s: StageState, gpus: list[int]) -> _Running:
        s.attempts += 1
        s.state, started = "running", time.time()
        work = self.store.work_root / s.fingerprint
        attempt_dir = attempt_path(self.store, s.fingerprint, run_id, s.attempts)
        attempt_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.store.logs_root / run_id / f"{st.name}-{s.attempts}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        task = Task(stage=st.name, uses=st.spec.uses, params=st.params.model_dump(mode="json"), seed=st.seed,
                    inputs=s.inputs, work_dir="" if self.store.remote else str(work), store=str(self.ws),
                    verify=self.verify,
                    fingerprint=s.fingerprint, run_id=run_id, pipeline=self.p.name, attempt=s.attempts,
                    events=str(attempt_dir / "events.jsonl"), result=str(attempt_dir / "result.json"),
                    resources=st.resources.model_dump(mode="json"),
                    platform=self.o.platform, platform_run_id=self.o.platform_run_id)
        task_path = attempt_dir / "task.json"
        task_path.write_text(task.model_dump_json(indent=1))
        threads = str(max(1, math.ceil(st.resources.cpus)))
        # the OpenMP wait policy is the stage process's own choice, from its machine's load (pipeline.cpu)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "ALIGNPIPE_CPUS": threads,
               "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(self.p.base_dir), os.environ.get("PYTHONPATH")]))}
        # = `alignpipe stage run --task FILE`, minus the CLI's imports (~60 ms per stage)
        cmd = [sys.executable, "-m", "alignpipe.pipeline.entry", str(task_path)]
        handle = self.executor.start(cmd, env, str(self.p.base_dir), str(log_path), st.resources)
        journal.record_attempt(Attempt(run_id, st.name, s.attempts, "running", started, None, None, None, False,
                                       s.fingerprint, {}, socket.gethostname(), str(log_path)))
        self.report({"event": "stage", "stage": st.name, "state": "running", "attempt": s.attempts,
                     "fingerprint": s.fingerprint})
        return _Running(handle, attempt_dir, log_path, started, gpus, st.resources.total_cpus)

    def _mirror_log(self, r: _Running, final: bool = False) -> None:
        """A bucket workspace gets the stage's log as it grows (every LOG_MIRROR_S at most, and when it ends), so
        `alignpipe logs -f` follows it from any machine."""
        if not self.store.remote:
            return
        when, size = r.log_mirrored
        try:
            now_size = r.log_path.stat().st_size
        except OSError:
            return
        if now_size != size and (final or time.time() - when >= LOG_MIRROR_S):
            try:
                self.store.fs.write_bytes(log_key(r.log_path), r.log_path.read_bytes())
                r.log_mirrored = (time.time(), now_size)
            except UserError as e:  # the journal and the local file keep it; the mirror catches up next time
                self.report({"event": "warning", "stage": None, "message": f"log not mirrored: {e}"})

    def _pump_events(self, journal: Journal, run_id: str, s: StageState, r: _Running) -> None:
        self._mirror_log(r)
        path = r.attempt_dir / "events.jsonl"
        try:
            with open(path) as f:
                f.seek(r.events_offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind("\n") + 1  # only whole lines; a partial last line waits for the next poll
        r.events_offset += len(chunk[:end].encode())
        for line in chunk[:end].splitlines():
            try:
                ev = json.loads(line)
                ev["type"]
            except (ValueError, TypeError, KeyError):
                self.report({"event": "warning", "stage": s.name, "message": f"{path}: skipped an unreadable event "
                             f"line ({line[:60]!r})"})
                continue
            if ev["type"] == "metrics":
                journal.add_metrics(run_id, s.name, s.fingerprint, ev["step"], ev["values"], ev["t"])
                self.report({"event": "metrics", "stage": s.name, "step": ev["step"], "values": ev["values"]})
            elif ev["type"] == "progress":
                self.report({"event": "progress", "stage": s.name, "done": ev["done"], "total": ev["total"],
                             "desc": ev.get("desc", "")})
            elif ev["type"] == "notice":
                self.report({**ev.get("fields", {}), "event": "notice", "stage": s.name, "message": ev["message"]})

    def _check(self, journal: Journal, run_id: str, s: StageState, r: _Running) -> bool:
        """Handle a finished or overdue process; True when its slot is free again."""
        st = self.p.stages[s.name]
        code = r.handle.poll()
        now = time.time()
        if code is None:
            if st.spec.timeout and r.reason is None and now - r.started > st.spec.timeout:
                r.reason = "timeout"
                r.handle.terminate()
                r.kill_deadline = now + self.o.kill_grace
            elif r.kill_deadline and now > r.kill_deadline:
                r.handle.kill()
            return False
        if r.reason == "timeout":
            r.handle.kill()  # grandchildren that ignored SIGTERM
        self._pump_events(journal, run_id, s, r)
        self._mirror_log(r, final=True)
        result = _read_json(r.attempt_dir / "result.json")
        if code == 0 and result and result.get("status") == "done":
            s.state, s.outputs, s.error = "done", result["outputs"], None
            self._check_gates(st, s)
            status = s.state
        else:
            tail = _tail(r.log_path, LOG_TAIL_LINES)
            why = f"timed out after {st.spec.timeout:g}s" if r.reason == "timeout" else _exit_text(code)
            s.error = f"{why}\n{tail}".strip()
            retry = code != 2 and s.attempts <= st.spec.retries  # exit 2 = bad input: retrying cannot help
            status = "failed"
            if retry:
                s.state = "ready"
                s.not_before = now + self.o.retry_base_delay * 2 ** (s.attempts - 1)
            else:
                s.state = "failed"
        journal.record_attempt(Attempt(run_id, s.name, s.attempts, status, r.started, now, code, s.error, False,
                                       s.fingerprint, s.outputs, socket.gethostname(), str(r.log_path)))
        event = {"event": "stage", "stage": s.name, "state": s.state, "attempt": s.attempts, "exit_code": code,
                 "duration": now - r.started}
        if s.state != "done":
            event["error"] = s.error
        if s.state == "done":
            event["outputs"] = s.outputs
        self.report(event)
        return True

    def _interrupt(self, journal: Journal, run_id: str, states: dict[str, StageState],
                   running: dict[str, _Running]) -> None:
        for r in running.values():
            r.handle.terminate()
        deadline = time.time() + self.o.kill_grace
        while any(r.handle.poll() is None for r in running.values()) and time.time() < deadline:
            time.sleep(0.05)
        for name, r in running.items():
            r.handle.kill()
            while r.handle.poll() is None:
                time.sleep(0.02)
            s = states[name]
            s.state, s.error = "interrupted", "interrupted (Ctrl-C or SIGTERM)"
            journal.record_attempt(Attempt(run_id, name, s.attempts, "interrupted", r.started, time.time(),
                                           r.handle.poll(), s.error, False, s.fingerprint, {}, socket.gethostname(),
                                           str(r.log_path)))
        for s in states.values():
            if s.state not in TERMINAL:  # pending or waiting to retry: never started this time
                s.state = "skipped"
        self.report({"event": "interrupted", "run_id": run_id})


def attempt_path(store: Store, fingerprint: str, run_id: str, attempt: int) -> Path:
    """An attempt's directory: its task.json, result.json and events.jsonl (progress and metrics, JSON lines)."""
    return store.work_root / fingerprint / "attempts" / f"{run_id}-{attempt}"


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _tail(path: Path, n: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tree_stat(path: Path) -> tuple[int, int]:
    """(total size, newest mtime) of a directory: the key under which its content hash is cached."""
    size, mtime = 0, 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            size += st.st_size
            mtime = max(mtime, st.st_mtime_ns)
    return size, mtime
