"""A real labeling page: a LabelDB in a temp dir served by uvicorn on a free 127.0.0.1 port."""

import pytest
from labeling_util import make_db

from alignpipe.labeling.server import PageServer


@pytest.fixture
def page(tmp_path):
    db = make_db(tmp_path / "labels.db", n=6, overlap=2)
    with PageServer(db) as server:
        yield server, db
