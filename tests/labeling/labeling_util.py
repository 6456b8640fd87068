"""Helpers shared by the labeling tests."""

from alignpipe.labeling.db import LabelDB


def make_db(path, n=4, overlap=1, prompts=None, responses=None, guidelines="Prefer the kinder answer."):
    db = LabelDB(path)
    db.configure(overlap=overlap, seed=0, guidelines=guidelines, title="labels", lease_seconds=600)
    db.add_pairs([(f"{i}:0:1", (prompts or {}).get(i, f"prompt {i}"), *(responses or {}).get(i, (f"a{i}", f"b{i}")))
                  for i in range(n)])
    return db


def cli(*args, timeout=120, **kw):
    """The real CLI in a subprocess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "alignpipe", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)
