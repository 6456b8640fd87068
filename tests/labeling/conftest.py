"""A real labeling page: a LabelDB in a temp dir served by uvicorn on a free 127.0.0.1 port."""

import pytest

from alignpipe.labeling.db import LabelDB
from alignpipe.labeling.server import PageServer


def make_db(path, n=4, overlap=1, prompts=None, responses=None, guidelines="Prefer the kinder answer."):
    db = LabelDB(path)
    db.configure(overlap=overlap, seed=0, guidelines=guidelines, title="labels", lease_seconds=600)
    db.add_pairs([(f"{i}:0:1", (prompts or {}).get(i, f"prompt {i}"), *(responses or {}).get(i, (f"a{i}", f"b{i}")))
                  for i in range(n)])
    return db


@pytest.fixture
def page(tmp_path):
    db = make_db(tmp_path / "labels.db", n=6, overlap=2)
    with PageServer(db) as server:
        yield server, db
