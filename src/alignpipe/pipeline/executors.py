"""Executors: where a stage process runs. The runner plans, schedules slots and tails events; an executor only
starts `python -m alignpipe.pipeline.entry TASK` (= `alignpipe stage run --task TASK`) somewhere and reports
its exit code.

- `LocalExecutor` (default): a child process in its own process group, killed with the runner (PDEATHSIG).
- `RayExecutor`: a Ray task with num_cpus/num_gpus/memory from the stage's resources, which runs the same
  command on whichever node Ray picks; GPUs are the ones Ray assigned. The workspace (store, work dirs, logs)
  must be on a path every node sees (one machine, or a shared file system).

A handle's `terminate()` asks the stage to stop: SIGTERM to its process group; for Ray, a stop file next to
the stage's log, which the Ray task polls and answers by stopping the group the same way (ray.cancel's
KeyboardInterrupt does not reach a task blocked on its child). `kill()` does not ask: SIGKILL to the group, or
ray.cancel(force=True), which kills the worker and, through PDEATHSIG, the stage process.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.spec import Machine, Resources


class Handle(Protocol):
    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


def _set_pdeathsig() -> None:
    """In the child before exec: die with SIGKILL when the parent (runner or Ray worker) dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _spawn(cmd: list[str], env: dict[str, str], cwd: str, log_path: str) -> subprocess.Popen:
    with open(log_path, "ab") as logf:
        return subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True, preexec_fn=_set_pdeathsig)


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class LocalHandle:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def poll(self) -> int | None:
        return self.proc.poll()

    def terminate(self) -> None:
        signal_group(self.proc, signal.SIGTERM)

    def kill(self) -> None:
        signal_group(self.proc, signal.SIGKILL)  # grandchildren that ignored SIGTERM too


class LocalExecutor:
    name = "local"

    def machine(self) -> Machine:
        return Machine.detect()

    def prepare(self, store: Any) -> None:
        """Stages run here: they share this machine's disk with the runner whatever the workspace."""

    def start(self, cmd: list[str], env: dict[str, str], cwd: str, log_path: str, resources: Resources) -> Handle:
        return LocalHandle(_spawn(cmd, env, cwd, log_path))

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------------------------
# Ray


SHIPPED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "PYTHONPATH")


def shipped_env(env: dict[str, str]) -> dict[str, str]:
    """What a Ray task carries to its node: the stage's placement settings and alignpipe's own variables, not the
    runner's whole environment (credentials come from each node's own provider chain; its cache is its own)."""
    return {k: v for k, v in env.items() if k in SHIPPED or (k.startswith("ALIGNPIPE_") and k != "ALIGNPIPE_CACHE")}


def _node_env(env: dict[str, str]) -> dict[str, str]:
    import ray

    return {**os.environ, **env, "CUDA_VISIBLE_DEVICES": ",".join(str(int(g)) for g in ray.get_gpu_ids())}


def _run_in_ray(cmd: list[str], env: dict[str, str], cwd: str, log_path: str, grace: float) -> int:
    """The Ray task: the same stage process, on this node, with the GPUs Ray gave this task."""
    return _run_in_ray_process(cmd, _node_env(env), cwd, log_path, grace)


def _run_in_ray_process(cmd: list[str], env: dict[str, str], cwd: str, log_path: str, grace: float) -> int:
    """Run the stage command here until it exits, or the stop file next to its log asks it to stop."""
    proc = _spawn(cmd, env, cwd, log_path)
    stop = Path(log_path + ".stop")
    while proc.poll() is None:
        if stop.exists():  # the runner asked (timeout, Ctrl-C): stop the stage's whole process group
            signal_group(proc, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            signal_group(proc, signal.SIGKILL)  # and whatever of the group is left
            proc.wait()
            break
        time.sleep(0.1)
    return proc.returncode


class RayHandle:
    def __init__(self, ref: Any, stop_path: Path):
        self.ref = ref
        self.stop_path = stop_path
        self.code: int | None = None

    def poll(self) -> int | None:
        import ray

        if self.code is None:
            ready, _ = ray.wait([self.ref], timeout=0)
            if ready:
                try:
                    self.code = int(ray.get(self.ref))
                except ray.exceptions.TaskCancelledError:
                    self.code = -signal.SIGTERM
                except ray.exceptions.WorkerCrashedError:
                    self.code = -signal.SIGKILL
                except ray.exceptions.RayError:
                    self.code = 1
        return self.code

    def terminate(self) -> None:
        self.stop_path.touch()

    def kill(self) -> None:
        import ray

        if self.poll() is None:
            ray.cancel(self.ref, force=True)


class _Relay:
    """A Ray actor beside the runner: stages on nodes without the runner's disk push their events, log and result
    here, and the runner drains them into its local files; it also carries stop requests to the nodes."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[tuple[str, bytes]]] = {}
        self.stops: set[str] = set()

    def push(self, key: str, kind: str, data: bytes) -> None:
        self.chunks.setdefault(key, []).append((kind, data))

    def drain(self, key: str) -> list[tuple[str, bytes]]:
        return self.chunks.pop(key, [])

    def stop(self, key: str) -> None:
        self.stops.add(key)

    def stopped(self, key: str) -> bool:
        return key in self.stops


def _run_in_ray_relayed(task_text: str, env: dict[str, str], key: str, relay: Any, grace: float) -> int:
    """The Ray task on a node that does not share the runner's disk: the task's files live in a node-local
    directory (its work dir and cache are the node's own, under its ALIGNPIPE_CACHE); every half second the new
    bytes of its events and log go to the relay, and the result when it ends."""
    import ray

    node = Path(tempfile.mkdtemp(prefix="alignpipe-stage-"))
    task = json.loads(task_text)
    task.update(events=str(node / "events.jsonl"), result=str(node / "result.json"), work_dir="")
    (node / "task.json").write_text(json.dumps(task))
    files = {"events": node / "events.jsonl", "log": node / "stage.log"}
    sent = dict.fromkeys(files, 0)

    def forward() -> None:
        for kind, path in files.items():
            if path.exists() and path.stat().st_size > sent[kind]:
                with open(path, "rb") as f:
                    f.seek(sent[kind])
                    data = f.read()
                sent[kind] += len(data)
                relay.push.remote(key, kind, data)

    proc = _spawn([sys.executable, "-m", "alignpipe.pipeline.entry", str(node / "task.json")], _node_env(env),
                  str(node), str(files["log"]))
    try:
        while proc.poll() is None:
            forward()
            if ray.get(relay.stopped.remote(key)):
                signal_group(proc, signal.SIGTERM)
                deadline = time.monotonic() + grace
                while proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                signal_group(proc, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.5)
        forward()
        result = node / "result.json"
        if result.exists():
            ray.get(relay.push.remote(key, "result", result.read_bytes()))  # delivered before the task returns
        return proc.returncode
    finally:
        shutil.rmtree(node, ignore_errors=True)


class RelayedHandle(RayHandle):
    """A relayed Ray task's handle: polling also writes what the node sent into the runner's local files."""

    def __init__(self, ref: Any, relay: Any, key: str, files: dict[str, Path]):
        super().__init__(ref, files["log"].with_name(files["log"].name + ".stop"))
        self.relay, self.key, self.files = relay, key, files

    def _drain(self) -> None:
        import ray

        for kind, data in ray.get(self.relay.drain.remote(self.key)):
            mode = "wb" if kind == "result" else "ab"
            with open(self.files[kind], mode) as f:
                f.write(data)

    def poll(self) -> int | None:
        done = self.code is not None
        code = super().poll()
        if not done:
            self._drain()  # after the task ended too: the result it pushed last
        return code

    def terminate(self) -> None:
        self.relay.stop.remote(self.key)


class RayExecutor:
    """Connects to a Ray cluster (`address`: "auto", "ray://host:port", or None to start a local one)."""

    name = "ray"

    def __init__(self, address: str | None = None, kill_grace: float = 5.0):
        try:
            import ray
        except ImportError:
            raise UserError("--executor ray needs Ray: pip install 'alignpipe[ray]'") from None
        self.kill_grace = kill_grace
        self._owns = not ray.is_initialized()
        if self._owns:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UserError(f"cannot connect to Ray at {address or 'a new local cluster'}: {e}") from None
        self._task = ray.remote(max_retries=0)(_run_in_ray)  # retries are the runner's, with backoff and resume
        self._relay: Any = None

    def machine(self) -> Machine:
        import ray

        res = ray.cluster_resources()
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        return Machine(cpus=int(res.get("CPU", 0)), gpus=int(res.get("GPU", 0)), memory=int(res.get("memory", 0))
                       or None, nodes=max(1, len(nodes)), node_cpus=int(max((n.get("CPU", 0) for n in nodes),
                                                                               default=res.get("CPU", 0))),
                       node_gpus=int(max((n.get("GPU", 0) for n in nodes), default=res.get("GPU", 0))))

    def prepare(self, store: Any) -> None:
        """A workspace in a bucket needs no disk shared with the nodes: stages then run from a copy of their task
        on the node, and send their events, log and result back through a relay actor."""
        if store.remote and self._relay is None:
            import ray

            self._relay = ray.remote(_Relay).options(num_cpus=0).remote()
            self._relay_task = ray.remote(max_retries=0)(_run_in_ray_relayed)

    def start(self, cmd: list[str], env: dict[str, str], cwd: str, log_path: str, resources: Resources) -> Handle:
        if resources.world_size > 1:  # one actor per rank in a placement group (alignpipe.distributed.launch)
            from alignpipe.distributed.launch import start_ray_ranks

            if self._relay is not None:
                raise UserError("a stage of several processes under --executor ray needs a workspace on a disk "
                                "every node sees (its ranks share the work dir); with a workspace in a bucket, run "
                                "it as one process or with the local executor")
            return start_ray_ranks(cmd, shipped_env(env), cwd, log_path, resources, self.kill_grace)
        opts: dict[str, Any] = {"num_cpus": resources.cpus, "num_gpus": resources.gpus}
        if resources.memory:
            opts["memory"] = resources.memory
        if self._relay is None:
            ref = self._task.options(**opts).remote(cmd, shipped_env(env), cwd, log_path, self.kill_grace)
            return RayHandle(ref, Path(log_path + ".stop"))
        task_path = Path(cmd[-1])
        task = json.loads(task_path.read_text())
        key = f"{task.get('run_id')}/{task['stage']}/{task.get('attempt')}"
        ref = self._relay_task.options(**opts).remote(task_path.read_text(), shipped_env(env), key, self._relay,
                                                      self.kill_grace)
        return RelayedHandle(ref, self._relay, key, {"events": Path(task["events"]), "log": Path(log_path),
                                                     "result": Path(task["result"])})

    def close(self) -> None:
        import ray

        if self._owns:
            ray.shutdown()


def make_executor(name: str, address: str | None = None) -> LocalExecutor | RayExecutor:
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address)
    raise UserError(f"--executor {name!r}: expected 'local' or 'ray'")
