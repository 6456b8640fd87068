"""How busy the machine is, and the OpenMP wait policy a stage process starts torch with.

torch's CPU ops run on an OpenMP pool (libgomp). Between two parallel regions its threads either spin for a
while or sleep on a futex. For the small ops of small models (the default pipeline's step is ~400 tokens × width
128) a sleeping thread takes longer to wake than the op takes to run: with OMP_WAIT_POLICY=PASSIVE two threads
keep ~1.1 cores busy. On a quiet machine a short spin (GOMP_SPINCOUNT=1000, tens of µs) makes the same SFT
step 1.5–1.7× faster. On a machine where other processes want the cores the same spin makes it ~1.3× *slower*
(a spinning thread waits for a partner that is not scheduled; longer spins are worse: 2× at 3000) while PASSIVE
barely slows down (benchmarks/notes/sft.md). libgomp reads the policy once, when torch loads, so the stage
process chooses it before importing torch, from the load other processes put on the machine while it checked
its inputs (execute(), at least MIN_WINDOW_S). CPU time of niced processes does not count: a task at nice > 0
yields its core to the stage's nice-0 threads (at nice 19 it gets ~1.5 % of a contended core), so it does not
starve a spinning partner. alignpipe's own background work runs niced for that reason (the MLflow tracker's
thread importing mlflow in the runner, counted as load, once turned a quiet machine's stage PASSIVE: 0.75x):

    quiet (the CPUs others leave free cover the threads, to QUIET_CORES)  ->  GOMP_SPINCOUNT=1000
    busy                                                                   ->  OMP_WAIT_POLICY=PASSIVE

The policy changes only timing, never results: the thread count (and so every reduction order) stays what
the stage's resources declare. A policy the user set (OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment)
is always kept. Torch-free.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

QUIET_CORES = 0.5  # how much of its threads' cores others may take for the machine to count as quiet
SPIN_COUNT = "1000"  # libgomp spin iterations before sleeping: ~tens of µs, spans the gap between two small ops
MIN_WINDOW_S = 0.2  # /proc/stat counts 10 ms ticks: 0.2 s resolves ~0.1 cores on 2 CPUs
POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # libgomp reads these; GOMP_SPINCOUNT wins
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_stat(nice: bool = True) -> tuple[float, float, int]:
    """(busy, steal) CPU seconds of the whole machine since boot and its CPU count, from /proc/stat. `nice`:
    whether time of niced processes counts as busy."""
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    v = [int(x) for x in lines[0].split()[1:]]
    # user nice system idle iowait irq softirq steal [guest, guest_nice: already inside user and nice]
    cpus = sum(1 for line in lines[1:] if line.startswith("cpu"))
    return (v[0] + (v[1] if nice else 0) + v[2] + v[5] + v[6]) / _TICK, v[7] / _TICK, cpus


def own_cpu() -> float:
    """CPU seconds of this process (all threads) plus its terminated, waited-for descendants."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@dataclass(frozen=True)
class Load:
    """What the machine did over a probe's window: cores others kept busy, hypervisor steal, our own CPU."""

    others_cores: float
    steal_cores: float
    window_s: float
    own_cpu_s: float


class LoadProbe:
    """Cores other processes kept busy since the probe started: machine busy time minus our own CPU time
    (this process's threads and its waited-for children); `nice=False` leaves niced processes out. Without
    /proc/stat (not Linux) it measures nothing and `read` returns None."""

    def __init__(self, nice: bool = True) -> None:
        self.nice = nice
        self.t0, self.own0 = time.monotonic(), own_cpu()
        try:
            self.busy0, self.steal0, _ = proc_stat(nice)
        except OSError:
            self.busy0 = self.steal0 = None

    def read(self) -> Load | None:
        """The load since the probe started (clipped to the machine; /proc/stat counts 10 ms ticks)."""
        if self.busy0 is None or self.steal0 is None:
            return None
        wall, own = max(time.monotonic() - self.t0, 1e-9), own_cpu() - self.own0
        busy, steal, cpus = proc_stat(self.nice)
        return Load(min(float(cpus), max(0.0, (busy - self.busy0) - own) / wall),
                    min(float(cpus), (steal - self.steal0) / wall), wall, own)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), else the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def is_quiet(others: float, threads: int) -> bool:
    """Whether `threads` spinning threads would have their cores: the CPUs others leave free cover them all
    but QUIET_CORES (on 2 CPUs with 2 threads: others ≤ 0.5 cores)."""
    return usable_cpus() - others >= threads - QUIET_CORES


def _threads(env: Mapping[str, str]) -> int:
    """The process's OpenMP thread count: OMP_NUM_THREADS (its outermost level), else the cores."""
    first = (env.get("OMP_NUM_THREADS") or env.get("ALIGNPIPE_CPUS") or "").split(",")[0].strip()
    return int(first) if first.isdigit() else os.cpu_count() or 1


def configure_openmp(probe: LoadProbe, env: MutableMapping[str, str] | None = None) -> tuple[bool, str]:
    """Set this process's OpenMP wait policy in `env` (default os.environ) before torch loads. Returns (whether
    it chose one, what and why) for the stage log. Leaves the policy alone when the user set one, when torch is
    already loaded (its pool is initialized), without /proc/stat, or with one thread (nothing to wait for)."""
    env = os.environ if env is None else env
    if any(k in env for k in POLICY_VARS):
        return False, "OpenMP wait policy: as set in the environment"
    if "torch" in sys.modules:
        return False, "OpenMP wait policy: torch already loaded, left as is"
    if _threads(env) <= 1:
        return False, "OpenMP wait policy: one thread, nothing to choose"
    wait = MIN_WINDOW_S - (time.monotonic() - probe.t0)
    if wait > 0 and probe.busy0 is not None:
        time.sleep(wait)
    load = probe.read()
    if load is None:
        return False, "OpenMP wait policy: no /proc/stat to measure the load, left as is"
    why = f"other processes used {load.others_cores:.2f} cores over {load.window_s:.2f} s"
    if is_quiet(load.others_cores, _threads(env)):
        env["GOMP_SPINCOUNT"] = SPIN_COUNT
        return True, f"OpenMP wait policy: spin {SPIN_COUNT} before sleeping ({why})"
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return True, f"OpenMP wait policy: PASSIVE ({why})"
