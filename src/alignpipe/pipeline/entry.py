"""The one stage entrypoint: run one stage from a self-contained task description.

`alignpipe stage run --task task.json` (what the local executor runs in each stage process, and what the Ray
executor and the exporters call) and `alignpipe stage run TYPE --input n=PATH --param k=v --out DIR` (manual
mode) both end in `execute(task)`. The task carries everything: stage type, params, seed, input paths and ids,
where to publish, the work dir for checkpoints. Nothing is read from the pipeline spec or the journal.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from alignpipe.pipeline.context import CheckpointMirror, Checkpoints, InputArtifact, StageContext
from alignpipe.pipeline.cpu import LoadProbe, configure_openmp
from alignpipe.pipeline.errors import StageFailed, UserError, pydantic_problems
from alignpipe.pipeline.fingerprint import fingerprint
from alignpipe.pipeline.fs import write_atomic
from alignpipe.pipeline.stagedef import StageLookupError, resolve_stage
from alignpipe.pipeline.store import MANIFEST, CorruptArtifact, Store, check_files, hash_tree, read_manifest, seal

TASK_SCHEMA = 1


class TaskInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    id: str
    external: str | None = None  # the URI, when the input is not a store artifact


class Task(BaseModel):
    """A self-contained description of one stage execution (JSON on disk, or a Ray task argument)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = TASK_SCHEMA
    stage: str
    uses: str
    params: dict[str, Any]
    seed: int
    inputs: dict[str, TaskInput]
    work_dir: str
    store: str | None = None  # publish into this workspace's store and record the fingerprint
    verify: Literal["always", "inputs", "never"] = "inputs"  # "never": inputs get size checks only, no re-hash
    out: str | None = None  # manual mode: publish into this directory instead
    fingerprint: str | None = None
    run_id: str | None = None
    pipeline: str | None = None
    attempt: int = 1
    events: str | None = None
    result: str | None = None
    resources: dict[str, Any] | None = None  # the stage's resources (spec.Resources); world size, placement
    platform: str | None = None  # the workflow platform whose task runs this stage (`alignpipe stage exec`)
    platform_run_id: str | None = None


def world_size(task: Task) -> int:
    """Processes the task runs as (resources nodes × procs_per_node; 1 without resources)."""
    r = task.resources or {}
    return int(r.get("nodes", 1)) * int(r.get("procs_per_node", 1))


def rank() -> int:
    """This process's rank in a multi-process stage (alignpipe.distributed.launch sets RANK), else 0."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def code_version() -> dict[str, Any]:
    from alignpipe import __version__

    info: dict[str, Any] = {"alignpipe": __version__}
    src = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if sha:
            info["git"] = sha
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def _lock_work_dir(work_dir: Path, wait_s: float = 60.0) -> int:
    """Hold the stage's work dir exclusively: an orphaned attempt still writing must not be joined by another."""
    work_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(work_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise StageFailed(f"work dir {work_dir} is held by another process running this stage") from None
            time.sleep(0.2)


def _open_inputs(task: Task, store: Store | None, level: str = "full") -> dict[str, InputArtifact]:
    """The stage's inputs as local directories, checked: an artifact of a workspace in a bucket comes from this
    machine's cache (fetched and re-hashed on first use)."""
    out = {}
    for name, ti in task.inputs.items():
        path = Path(ti.path) if ti.path else store.local_dir(ti.id)
        manifest = None
        if ti.external is None:
            try:
                manifest = read_manifest(path)
            except FileNotFoundError:
                raise StageFailed(f"stage {task.stage!r} input {name!r}: {path} is not a published artifact "
                                  "(no manifest.json)") from None
            except CorruptArtifact as e:
                raise StageFailed(f"stage {task.stage!r} refuses input {name!r}: {e}") from None
            # re-hashed before use: a stage never trains on corrupt bytes (unless the pipeline says verify: never)
            problems = check_files(path, manifest, level="size" if task.verify == "never" else level, art_id=ti.id)
            if problems:
                raise StageFailed(f"stage {task.stage!r} refuses input {name!r}: artifact {ti.id[:12]} is corrupt: "
                                  f"{'; '.join(problems)}. Run `alignpipe verify`, then rerun its producer with "
                                  "--force")
        out[name] = InputArtifact(name, path, ti.id, manifest)
    return out


def execute(task: Task) -> dict[str, str]:
    """Run the stage and publish its outputs; returns output name -> artifact id."""
    probe = LoadProbe(nice=False)  # its window: resolving, checking and opening inputs, until the stage loads torch
    try:
        sdef = resolve_stage(task.uses)
    except StageLookupError as e:
        raise UserError(f"stage {task.stage!r}: {e}") from None
    try:
        params = sdef.parse_params(task.params)
    except ValidationError as e:
        raise UserError(pydantic_problems(f"stage {task.stage!r}", "params", e)) from None
    if sdef.check is not None:  # the spec-time cross-field check, for callers that never saw a spec (manual mode)
        problems = sdef.check(params, set(task.inputs))
        if problems:
            raise UserError([f"stage {task.stage!r} ({task.uses}): {p}" for p in problems])
    store = Store(task.store).ensure() if task.store else None
    work_dir = _work_dir(task, store)
    me = rank()  # a rank of a multi-process stage: rank 0 publishes, the others only train (distributed.launch)
    lock_fd = None if os.environ.get("ALIGNPIPE_WORK_LOCKED") or me else _lock_work_dir(work_dir)
    try:
        inputs = _open_inputs(task, store, "full" if me == 0 else "size")  # rank 0 re-hashes them for every rank
        staging = work_dir / ("out" if me == 0 else f"out-rank{me}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        ctx = StageContext(stage=task.stage, uses=task.uses, params=params, seed=task.seed, inputs=inputs,
                           out_root=staging, work_dir=work_dir, output_kinds=dict(sdef.outputs),
                           events_path=Path(task.events) if task.events and me == 0 else None, attempt=task.attempt,
                           run_id=task.run_id, resources=dict(task.resources or {}), rank=me,
                           ckpt_mirror=_checkpoint_mirror(task, store) if me == 0 else None)
        if world_size(task) == 1:  # (a multi-process stage's launcher restores it before starting the ranks)
            _restore_from_workspace(task, ctx.ckpt_mirror, ctx.checkpoints)
        chose, policy = configure_openmp(probe)  # before the stage imports torch (pipeline.cpu)
        if chose:
            print(f"[{task.stage}] {policy}", flush=True)
        with store.cache.using([i.id for i in inputs.values()]) if store and store.cache else nullcontext():
            sdef.run(ctx)  # (the cached copies of its inputs are held: eviction skips them meanwhile)
        if me:
            shutil.rmtree(staging, ignore_errors=True)
            return {}
        if sdef.distributed:  # the artifact records how many processes made it (not part of the fingerprint)
            for name in ctx.output_kinds:
                ctx.annotate(name, world_size=world_size(task))
        outputs = _publish(task, sdef.version, ctx, params.model_dump(mode="json"), store)
        ctx.checkpoints.clear()  # published: the checkpoints (and their copy in a bucket) have done their job
        return outputs
    except BaseException:
        if task.out and me == 0 and not any((work_dir / "ckpt").glob("step-*")):  # manual mode: leave no trace
            _remove_work_dir(work_dir)                                      # of a failure with nothing to resume
        raise
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def _work_dir(task: Task, store: Store | None) -> Path:
    """A bucket workspace's stage keeps its work dir in the state of the machine it runs on (its cache dir)."""
    return Path(task.work_dir) if task.work_dir else store.work_root / task.fingerprint


def _restore_from_workspace(task: Task, mirror: CheckpointMirror | None, checkpoints: Checkpoints) -> None:
    """A stage killed on another machine resumes here: its newest checkpoint comes back from the bucket."""
    if mirror is not None and checkpoints.latest() is None:
        restored = mirror.restore(checkpoints.root)
        if restored is not None:
            print(f"[{task.stage}] restored checkpoint step {restored.step} from the workspace", flush=True)


def _checkpoint_mirror(task: Task, store: Store | None) -> CheckpointMirror | None:
    """A bucket workspace keeps a copy of the stage's checkpoints, so another machine can resume it."""
    if store is None or not store.remote or not task.fingerprint:
        return None
    return CheckpointMirror(store.fs, f"work/{task.fingerprint}/ckpt")


def _remove_work_dir(work_dir: Path) -> None:
    shutil.rmtree(work_dir, ignore_errors=True)
    try:
        work_dir.parent.rmdir()  # DIR.work, if no other command's work is in it
    except OSError:
        pass


def _publish(task: Task, version: str, ctx: StageContext, params: dict[str, Any], store: Store | None
             ) -> dict[str, str]:
    missing = [n for n in ctx.output_kinds if not (ctx.out_root / n).is_dir()]
    if missing:
        raise StageFailed(f"stage {task.stage!r} ({task.uses}) finished without writing output(s) {missing}; "
                          "a stage must fill ctx.output_dir(name) for every declared output")
    inputs_meta = {n: ({"id": i.id, "external": i.external} if i.external else {"id": i.id})
                   for n, i in task.inputs.items()}
    code = code_version()
    outputs = {}
    for name, kind in ctx.output_kinds.items():
        meta = {
            "kind": kind,
            "producer": {"stage": task.stage, "uses": task.uses, "version": version, "output": name,
                         "fingerprint": task.fingerprint, "run_id": task.run_id, "pipeline": task.pipeline,
                         "seed": task.seed},
            "inputs": inputs_meta, "params": params, "code": code, "summary": ctx.summaries.get(name, {}),
        }
        if task.platform:  # outside the artifact id (a hash of the files): the same id on every platform
            meta["producer"].update(platform=task.platform, platform_run_id=task.platform_run_id)
        staging = ctx.out_root / name
        if store is not None:
            outputs[name] = store.publish(staging, meta).id
        else:
            outputs[name] = _publish_to_dir(staging, meta, Path(task.out), name, len(ctx.output_kinds) == 1)
    if store is not None and task.fingerprint:
        store.record(task.fingerprint, outputs, task.stage)  # the commit point of the cache
    return outputs


def _publish_to_dir(staging: Path, meta: dict[str, Any], out: Path, name: str, single: bool) -> str:
    """Manual mode: the same manifest, written into --out (or --out/<name> when a stage has several outputs)."""
    art_id = seal(staging, meta)["id"]
    dest = out if single else out / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    os.rename(staging, dest)
    return art_id


# ---------------------------------------------------------------------------------------------------------------
# process side: `alignpipe stage run --task FILE`


def manual_task(uses: str, inputs: dict[str, str], params: dict[str, Any], out: str, seed: int) -> Task:
    """Manual mode: inputs are paths; a path holding a manifest.json is an artifact, anything else external."""
    try:
        sdef = resolve_stage(uses)
    except StageLookupError as e:
        raise UserError(f"stage {uses!r}: {e}") from None
    try:
        parsed = sdef.parse_params(params).model_dump(mode="json")
    except ValidationError as e:
        raise UserError(pydantic_problems(f"stage {uses!r}", "params", e)) from None
    _check_manual_inputs(uses, sdef, inputs)
    tinputs = {}
    for name, p in inputs.items():
        path = Path(p).expanduser().resolve()
        if not path.exists():
            raise UserError(f"--input {name}={p}: no such file or directory")
        mf = path / MANIFEST
        if mf.is_file():
            tinputs[name] = TaskInput(path=str(path), id=_manifest_id(mf, f"--input {name}={p}"))
        else:
            tinputs[name] = TaskInput(path=str(path), id=hash_tree(path)[0], external=str(path))
    out_p = Path(out).expanduser().resolve()
    _check_out_dir(out_p, multiple=len(sdef.outputs) > 1)
    # checkpoints live in DIR.work/<fingerprint>: rerunning the same command resumes, a changed one starts afresh
    fp = fingerprint(uses, sdef.version, parsed, {k: v.id for k, v in tinputs.items()}, seed)
    return Task(stage=uses.rsplit(":", 1)[-1].split(".")[-1], uses=uses, params=params, seed=seed, inputs=tinputs,
                out=str(out_p), work_dir=str(out_p.with_name(out_p.name + ".work") / fp[:16]))


def _check_manual_inputs(uses: str, sdef: Any, inputs: dict[str, str]) -> None:
    """The spec-time input checks, for manual mode: declared inputs only, required ones present."""
    if sdef.inputs is None:
        return
    problems = [f"--input {n}: stage type {uses!r} takes no input {n!r}; it takes: {', '.join(sdef.inputs) or 'none'}"
                for n in inputs if n not in sdef.inputs]
    problems += [f"stage type {uses!r} needs input {n!r} ({d.kind}: {d.doc or 'see its docs'}); give it with "
                 f"-i {n}=PATH" for n, d in sdef.inputs.items() if d.required and n not in inputs]
    if problems:
        raise UserError(problems)


def _manifest_id(path: Path, what: str) -> str:
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["id"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{what}: {path} is not a readable artifact manifest (no 'id'); run `alignpipe verify` on "
                        "its workspace, or pass the files without manifest.json") from None


def _check_out_dir(out: Path, multiple: bool) -> None:
    """--out must be creatable, and never an existing directory of someone else's files (it is replaced)."""
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--out {out}: {parent} is a file, so no directory can be made under it; choose another DIR")
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out}: is a file; give a directory path (it is created)")
        entries = os.listdir(out)
        ours = (out / MANIFEST).is_file() or (multiple and all((out / d / MANIFEST).is_file() for d in entries))
        if entries and not ours:
            raise UserError(f"--out {out}: holds files that are not an earlier output of `stage run`; they would be "
                            "replaced. Choose a new or empty directory")


def read_task(path: str) -> Task:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--task {path}: cannot read it ({e.strerror or e}); give the task.json an executor "
                        "wrote") from None
    try:
        return Task.model_validate_json(text)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"])) or "(top level)"
        raise UserError(f"--task {path}: not a task description: {where}: {first['msg']} ({e.error_count()} "
                        "problem(s)); give the task.json an executor wrote") from None


def run_task_file(path: str) -> int:
    """Entry of a stage process. Exit 0 done, 2 user/data error (not retried), 1 anything else. A task of several
    processes makes this process their launcher (alignpipe.distributed.launch); each rank enters here again."""
    task = read_task(path)
    if world_size(task) > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _launch(path, task)
    result_path = Path(task.result) if task.result and rank() == 0 else None
    try:
        outputs = execute(task)
    except (UserError, StageFailed) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        _write_result(result_path, {"status": "failed", "error": str(e)})
        return 2
    except KeyboardInterrupt:
        return 130
    _write_result(result_path, {"status": "done", "outputs": outputs})
    return 0


def _launch(path: str, task: Task) -> int:
    """This process starts the task's ranks here and holds its work dir for them."""
    from alignpipe.distributed.launch import launch_local

    if int((task.resources or {}).get("nodes", 1)) > 1:
        print(f"error: stage {task.stage!r} spans {task.resources['nodes']} nodes: run it with --executor ray",
              file=sys.stderr, flush=True)
        return 2
    store = Store(task.store).ensure() if task.store else None
    work_dir = _work_dir(task, store)
    lock_fd = _lock_work_dir(work_dir)
    try:
        if store is not None and store.remote:  # once here, not by every rank at once
            _open_inputs(task, store)
            _restore_from_workspace(task, _checkpoint_mirror(task, store), Checkpoints(work_dir / "ckpt"))
        return launch_local(path, world_size(task), log=lambda msg: print(f"[{task.stage}] {msg}", flush=True))
    finally:
        os.close(lock_fd)


def _write_result(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        write_atomic(path, json.dumps(data).encode())


if __name__ == "__main__":  # `python -m alignpipe.pipeline.entry TASK`: the local executor's lean form of
    sys.exit(run_task_file(sys.argv[1]))  # `alignpipe stage run --task TASK` (same function, no CLI imports)
