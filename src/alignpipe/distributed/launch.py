"""Start a multi-process stage's ranks: here as child processes, or as Ray actors in a placement group.

Every rank runs the one stage entrypoint (`python -m alignpipe.pipeline.entry TASK`) with the torchrun environment:
RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT. `World.from_env()` joins them.

- Local (`launch_local`): the stage process itself becomes the launcher when its task asks for more than one
  process — the runner, the executor and the slot accounting see one process group as before. It holds the work
  dir's lock for its ranks (ALIGNPIPE_WORK_LOCKED), starts them in its own process group (a runner's SIGTERM or
  SIGKILL of the group reaches every rank) and dies with them: when a rank exits with an error or is killed, the
  others are stopped (SIGTERM, then SIGKILL) and the launcher exits with the rank's code (2, bad input, is not
  retried; a signal becomes 1, retried), so the runner's retry and resume work as for one process.
- Ray (`start_ray_ranks`): one actor per rank, each reserving its rank's CPUs and GPUs in one placement group
  (a bundle per node: `procs_per_node` ranks share it), rank 0's node address and a free port its rendezvous.
  The handle fails the stage when any rank fails, and stops the others.

A torch-free module: the launcher never loads torch.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ENTRY = [sys.executable, "-m", "alignpipe.pipeline.entry"]
GRACE_S = 5.0  # a rank asked to stop gets this long before SIGKILL


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def rank_env(rank: int, size: int, local_rank: int, local_size: int, master: tuple[str, int]) -> dict[str, str]:
    """The torchrun environment of one rank."""
    return {"RANK": str(rank), "WORLD_SIZE": str(size), "LOCAL_RANK": str(local_rank),
            "LOCAL_WORLD_SIZE": str(local_size), "MASTER_ADDR": master[0], "MASTER_PORT": str(master[1])}


def launch_local(task_path: str, size: int, log: Any = print) -> int:
    """Run `size` ranks of the task here; their exit code (0 when all succeeded)."""
    from alignpipe.pipeline.executors import _set_pdeathsig

    master = ("127.0.0.1", free_port())
    procs = []
    for r in range(size):
        env = {**os.environ, **rank_env(r, size, r, size, master), "ALIGNPIPE_WORK_LOCKED": "1"}
        procs.append(subprocess.Popen([*ENTRY, task_path], env=env, stdin=subprocess.DEVNULL,
                                      preexec_fn=_set_pdeathsig))
    log(f"launched {size} ranks (pids {', '.join(str(p.pid) for p in procs)}), rendezvous {master[0]}:{master[1]}")
    Path(task_path).with_name("ranks.json").write_text(
        "{" + ", ".join(f'"{r}": {p.pid}' for r, p in enumerate(procs)) + "}")
    return supervise(procs, log)


def supervise(procs: list[subprocess.Popen], log: Any = print) -> int:
    """Wait for every rank; on the first failure stop the others and return its code."""
    from alignpipe.pipeline.runner import _exit_text

    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = next(((r, c) for r, c in enumerate(codes) if c not in (None, 0)), None)
            if failed is not None:
                rank, code = failed
                log(f"rank {rank} {_exit_text(code)}; stopping the other ranks")
                stop(procs)
                return code if code > 0 else 1
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.05)
    except KeyboardInterrupt:
        stop(procs)
        return 130


def stop(procs: list[subprocess.Popen], grace: float = GRACE_S) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


# ---------------------------------------------------------------------------------------------------------------
# Ray: one actor per rank


class _RankActor:
    """A Ray actor holding one rank's CPUs and GPUs; it runs the rank's stage process on its node (the same
    command and environment as a local rank, plus the GPUs Ray gave it) and stops it when the stop file appears."""

    def address(self) -> tuple[str, int, str]:
        """(this node's IP, a free port on it, the node id): rank 0's is the rendezvous."""
        import ray

        ip = ray.util.get_node_ip_address()
        return ip, free_port(ip), ray.get_runtime_context().get_node_id()

    def run(self, cmd: list[str], env: dict[str, str], cwd: str, log_path: str, grace: float) -> int:
        import ray

        from alignpipe.pipeline.executors import _run_in_ray_process

        gpus = ",".join(str(int(g)) for g in ray.get_gpu_ids())
        return _run_in_ray_process(cmd, {**os.environ, **env, "CUDA_VISIBLE_DEVICES": gpus}, cwd, log_path, grace)


class RayRanksHandle:
    """The runner's handle on a multi-process stage under Ray: its exit code is the first failing rank's (the
    others are stopped), or 0 once every rank succeeded; the placement group is removed when it ends."""

    def __init__(self, actors: list[Any], refs: list[Any], pg: Any, stop_path: Path, grace: float):
        self.actors, self.refs, self.pg, self.stop_path, self.grace = actors, refs, pg, stop_path, grace
        self.codes: list[int | None] = [None] * len(refs)
        self.failed: int | None = None
        self.deadline: float | None = None
        self.code: int | None = None

    def poll(self) -> int | None:
        if self.code is not None:
            return self.code
        self._collect()
        first = next((c for c in self.codes if c not in (None, 0)), None)
        if first is not None and self.failed is None:
            self.failed, self.deadline = first, time.monotonic() + self.grace + 5
            self.stop_path.touch()  # every rank's actor stops its process
        done = all(c is not None for c in self.codes)
        if done or (self.deadline is not None and time.monotonic() > self.deadline):
            self.code = self.failed if self.failed is not None else 0
            self._release()
        return self.code

    def _collect(self) -> None:
        import ray

        for i, ref in enumerate(self.refs):
            if self.codes[i] is None and ray.wait([ref], timeout=0)[0]:
                try:
                    self.codes[i] = int(ray.get(ref))
                except ray.exceptions.RayError:  # the actor died (killed, node lost)
                    self.codes[i] = -signal.SIGKILL

    def terminate(self) -> None:
        self.stop_path.touch()

    def kill(self) -> None:
        if self.poll() is None:
            self.code = self.failed if self.failed is not None else -signal.SIGKILL
            self._release()

    def _release(self) -> None:
        import ray
        from ray.util import remove_placement_group

        for actor in self.actors:  # killing an actor kills its rank process too (PDEATHSIG)
            ray.kill(actor)
        remove_placement_group(self.pg)


class _Failed:
    """A stage that could not start: it has already exited with `code` (the reason is in its log)."""

    def __init__(self, code: int):
        self.code = code

    def poll(self) -> int:
        return self.code

    def terminate(self) -> None:
        pass

    def kill(self) -> None:
        pass


def start_ray_ranks(cmd: list[str], env: dict[str, str], cwd: str, log_path: str, resources: Any,  # noqa: PLR0913
                    grace: float = GRACE_S, ready_timeout: float = 120.0) -> RayRanksHandle | _Failed:
    """One Ray actor per rank in a placement group: a bundle per node holding its procs_per_node ranks' CPUs,
    GPUs and memory, the bundles on distinct nodes (STRICT_SPREAD) — or one node (STRICT_PACK)."""
    import ray
    from ray.util import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    nodes, per_node, size = resources.nodes, resources.procs_per_node, resources.world_size
    bundle = {"CPU": resources.cpus * per_node, **({"GPU": resources.gpus * per_node} if resources.gpus else {}),
              **({"memory": resources.memory * per_node} if resources.memory else {})}
    pg = placement_group([bundle] * nodes, strategy="STRICT_SPREAD" if nodes > 1 else "STRICT_PACK")
    ready, _ = ray.wait([pg.ready()], timeout=ready_timeout)
    if not ready:
        from ray.util import remove_placement_group

        remove_placement_group(pg)
        with open(log_path, "a") as log:
            log.write(f"error: the Ray cluster cannot place {nodes} node(s) × {bundle} within {ready_timeout:g} s; "
                      "lower nodes, procs_per_node or cpus, or add nodes to the cluster\n")
        return _Failed(2)
    actor_cls = ray.remote(max_restarts=0)(_RankActor)
    actors = [actor_cls.options(num_cpus=resources.cpus, num_gpus=resources.gpus, scheduling_strategy=(
        PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=r // per_node))).remote()
        for r in range(size)]
    where = ray.get([a.address.remote() for a in actors])
    master = where[0][:2]
    with open(log_path, "a") as log:
        for r, (ip, _, node) in enumerate(where):
            log.write(f"[launch] rank {r} on node {node[:12]} ({ip}), rendezvous {master[0]}:{master[1]}\n")
    refs = [a.run.remote(cmd, {**env, **rank_env(r, size, r % per_node, per_node, master)}, cwd, log_path, grace)
            for r, a in enumerate(actors)]
    return RayRanksHandle(actors, refs, pg, Path(log_path + ".stop"), grace)
