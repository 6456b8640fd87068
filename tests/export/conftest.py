"""Fixtures of the export tests: the platforms' side environments, the example pipeline and its reference run.

Each platform lives in its own venv (.venvs/NAME, built by scripts/setup_env.sh from constraints/NAME.txt: the
first session installs, later ones reuse it) and its tasks call this venv's `alignpipe` by absolute path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from platform_util import airflow_env, final_ids, side_env

from alignpipe.api import builtin_path

HERE = Path(__file__).resolve().parent
ALIGNPIPE = str(Path(sys.executable).parent / "alignpipe")


# -- the platforms' side envs (scripts/setup_env.sh: installed by the first session, reused after) ------------------


@pytest.fixture(scope="session")
def dvc_bin() -> Path:
    return side_env("dvc") / "dvc"


@pytest.fixture(scope="session")
def prefect_python() -> Path:
    return side_env("prefect") / "python"


@pytest.fixture(scope="session")
def metaflow_python() -> Path:
    return side_env("metaflow") / "python"


@pytest.fixture(scope="session")
def kfp_python() -> Path:
    return side_env("kfp") / "python"


@pytest.fixture(scope="session")
def airflow_python() -> Path:
    return side_env("airflow") / "python"


@pytest.fixture(scope="session")
def airflow_home(airflow_python, tmp_path_factory):
    """An AIRFLOW_HOME with a migrated sqlite metadata database, shared by the session's Airflow tests."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = airflow_env(home, home / "dags")
    p = subprocess.run([str(airflow_python.parent / "airflow"), "db", "migrate"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return home


# -- the example pipeline ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def alignpipe_exe() -> str:
    return ALIGNPIPE


@pytest.fixture
def example_spec(tmp_path) -> Path:
    """The built-in torch-free example pipeline, copied next to the test's workspace."""
    dst = tmp_path / "example.yaml"
    shutil.copy(builtin_path("example"), dst)
    return dst


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> tuple[Path, dict[str, dict[str, str]]]:
    """`alignpipe run` of the example pipeline: (its workspace, stage -> output ids). Copy before writing to it."""
    root = tmp_path_factory.mktemp("reference")
    shutil.copy(builtin_path("example"), root / "example.yaml")
    ws = root / "ws"
    p = subprocess.run([ALIGNPIPE, "run", str(root / "example.yaml"), "-w", str(ws), "-q"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return ws, final_ids(ws)


@pytest.fixture
def reference_copy(reference, tmp_path) -> Path:
    """A private copy of the reference workspace (everything cached), to run a platform against."""
    ws = tmp_path / "ref-ws"
    shutil.copytree(reference[0], ws)
    return ws


@pytest.fixture
def flaky_spec(tmp_path) -> Path:
    """corpus -> flaky (fails once, retries: 1) -> words: a pipeline whose middle stage needs the platform's retry."""
    shutil.copy(HERE / "platform_stages.py", tmp_path / "platform_stages.py")
    spec = tmp_path / "flaky.yaml"
    spec.write_text(f"""name: flaky
stages:
  corpus: {{uses: example.corpus, params: {{lines: 50}}}}
  flaky:
    uses: platform_stages:flaky
    inputs: {{text: corpus.out}}
    params: {{counter: {tmp_path / 'counter'}, fail_times: 1}}
    retries: 1
  words: {{uses: example.count, inputs: {{text: corpus.out}}}}
""")
    return spec


@pytest.fixture
def clean_env(tmp_path) -> dict[str, str]:
    """The environment platform commands run in: no analytics, a user name, a private HOME for their state."""
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_NO_UPDATER": "1", "USER": os.environ.get("USER", "tester"),
            "USERNAME": os.environ.get("USER", "tester"), "HOME": str(home)}
