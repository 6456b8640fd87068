"""The OpenMP wait policy a stage process picks before torch loads (pipeline.cpu), in real subprocesses:
the machine's real /proc/stat, real CPU-burning neighbours, and the variable libgomp will read."""

import json
import os
import subprocess
import sys
import time

import pytest

from alignpipe.pipeline.cpu import POLICY_VARS, LoadProbe, is_quiet

CHOOSE = """
import json, os, sys
from alignpipe.pipeline.cpu import POLICY_VARS, LoadProbe, configure_openmp
chose, message = configure_openmp(LoadProbe())
print(json.dumps({"chose": chose, "message": message, "torch_loaded": "torch" in sys.modules,
                  **{k: os.environ.get(k) for k in POLICY_VARS}}))
"""
BURN = "import time\nend = time.time() + {s}\nwhile time.time() < end: pass\n"


def choose(threads: str, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in POLICY_VARS}
    out = subprocess.run([sys.executable, "-c", CHOOSE], env={**base, "OMP_NUM_THREADS": threads, **env},
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_a_busy_machine_gets_passive_threads():
    burners = [subprocess.Popen([sys.executable, "-c", BURN.format(s=3)]) for _ in range(os.cpu_count() or 2)]
    try:
        time.sleep(0.3)  # the burners are past their start-up and spinning
        got = choose("2")
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert got["OMP_WAIT_POLICY"] == "PASSIVE" and got["GOMP_SPINCOUNT"] is None and got["chose"], got
    assert got["message"].startswith("OpenMP wait policy: PASSIVE (other processes used ") and not got["torch_loaded"]


def test_the_choice_is_one_of_the_two_and_names_the_load():
    got = choose("2")  # quiet or not depends on this shared machine: either answer, consistent with its reason
    others = float(got["message"].split("used ")[1].split(" cores")[0])
    assert got["chose"]
    if is_quiet(others, 2):
        assert got["GOMP_SPINCOUNT"] == "1000" and got["OMP_WAIT_POLICY"] is None, got
    else:
        assert got["OMP_WAIT_POLICY"] == "PASSIVE" and got["GOMP_SPINCOUNT"] is None, got


@pytest.mark.parametrize("env", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "5"}])
def test_a_policy_the_user_set_is_kept(env):
    got = choose("2", **env)
    assert {k: got[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} == {
        "OMP_WAIT_POLICY": env.get("OMP_WAIT_POLICY"), "GOMP_SPINCOUNT": env.get("GOMP_SPINCOUNT")}
    assert got["message"] == "OpenMP wait policy: as set in the environment" and not got["chose"]


def test_one_thread_has_nothing_to_wait_for():
    got = choose("1")
    assert got["OMP_WAIT_POLICY"] is None and got["GOMP_SPINCOUNT"] is None
    assert got["message"] == "OpenMP wait policy: one thread, nothing to choose" and not got["chose"]



def test_niced_processes_do_not_count_as_load():
    """A niced task yields its core to the stage's threads: the stage's probe (nice=False) leaves its CPU time out,
    the benchmarks' probe (nice=True) keeps it. One niced burner, read while it is a zombie (a reaped child's time
    would count as the probe's own); its exact CPU time then comes from wait4."""
    both, bare = LoadProbe(nice=True), LoadProbe(nice=False)
    burner = subprocess.Popen([sys.executable, "-c", "import os; os.nice(19)\n" + BURN.format(s=1)])
    while open(f"/proc/{burner.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.02)
    with_nice, without = both.read(), bare.read()
    _, status, usage = os.wait4(burner.pid, 0)
    burner.returncode = 0
    assert status == 0
    burned = usage.ru_utime + usage.ru_stime
    counted = (with_nice.others_cores - without.others_cores) * with_nice.window_s
    assert burned > 0.2  # it ran (a contended machine still gives a nice-19 task some CPU over a second)
    assert counted >= burned - 0.1, (counted, burned)  # /proc/stat ticks are 10 ms
