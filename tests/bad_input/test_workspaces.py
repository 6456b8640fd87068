"""Bad or damaged workspaces: refused before anything is written, or — for damaged files inside a workspace —
reported as findings (`artifacts`, `verify`) and repaired by a run (recompute, new journal on request)."""

import json
import subprocess
from pathlib import Path

import pytest
from badinput import Case, chain, copy_tree, ids, run_case, write

RUN = ["run", "--example", "-w", "ws"]


def damage(pick, data: bytes | None = None, flip: bool = False):
    """Overwrite (or flip the first byte of) the file `pick(ws)` returns."""
    def make(root: Path) -> None:
        f = pick(root / "ws")
        if flip:
            b = bytearray(f.read_bytes())
            b[0] ^= 1
            f.write_bytes(bytes(b))
        else:
            f.write_bytes(data)
    return make


def first_artifact(ws: Path, name: str = "manifest.json") -> Path:
    art = sorted((ws / "artifacts").iterdir())[0]
    return art / name if name != "payload" else next(p for p in sorted(art.iterdir()) if p.name != "manifest.json")


def a_ref(ws: Path) -> Path:
    return sorted((ws / "refs").iterdir())[0]


def journal(ws: Path) -> Path:
    for extra in ("journal.db-wal", "journal.db-shm"):
        (ws / ".alignpipe" / extra).unlink(missing_ok=True)
    return ws / ".alignpipe" / "journal.db"


FRESH = [  # refused before anything is written
    Case("ws-is-a-file", RUN[:-1] + ["afile"], 2,
         [r"workspace .*afile: is a file, not a directory; pass --workspace DIR"], setup=write("afile", "x")),
    Case("ws-under-a-file", RUN[:-1] + ["afile/ws"], 2,
         [r"workspace .*afile/ws: .*afile is a file, so no directory can be made under it"],
         setup=write("afile", "x")),
    Case("ws-foreign-dir", RUN[:-1] + ["docs"], 2,
         [r"workspace .*docs: holds other files \(a.txt, b.txt\) and no alignpipe workspace; pass a new or empty"],
         setup=chain(write("docs/a.txt", "a"), write("docs/b.txt", "b"))),
    Case("ws-s3-no-credentials", RUN[:-1] + ["s3://bucket/prefix"], 2,
         [r"cannot reach s3://bucket/prefix: access denied; check the credentials \(AWS_PROFILE, AWS_ACCESS_KEY_ID"],
         env={"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}),
    Case("ws-gs-without-gcsfs", ["status", "-w", "gs://bucket/prefix"], 2,
         [r"workspace 'gs://bucket/prefix': gs:// needs gcsfs \(pip install 'alignpipe\[gcs\]'\)"]),
    Case("ws-unknown-scheme", RUN[:-1] + ["ftp://host/ws"], 2, [r"not ftp:// URIs"]),
    Case("env-ws-is-a-file", ["artifacts"], 2, [r"no alignpipe workspace here"], env={"ALIGNPIPE_WORKSPACE": "afile"},
         setup=write("afile", "x")),
]

DAMAGED = [  # a finished example workspace with one file damaged
    Case("garbled-manifest-listed", ["artifacts", "-w", "ws"], 0,
         [r"corrupt", r"manifest\.json: unreadable manifest \(JSONDecodeError"],
         setup=damage(first_artifact, b"{garbled")),
    Case("garbled-manifest-verify", ["verify", "-w", "ws"], 1,
         [r"corrupt [0-9a-f]{12}: .*manifest\.json: unreadable manifest", r"3 ok, 1 corrupt"],
         setup=damage(first_artifact, b"{garbled")),
    Case("empty-manifest-verify", ["verify", "-w", "ws"], 1, [r"unreadable manifest", r"1 corrupt"],
         setup=damage(first_artifact, b"")),
    Case("garbled-manifest-run-recomputes", RUN, 0,
         [r"warning: \w+: cached artifact [0-9a-f]{12} is corrupt .*unreadable manifest.*moved to .*quarantine",
          r"done \(3 cached, 1 done\)"], setup=damage(first_artifact, b"[1, 2"), writes=(r"^ws/",)),
    Case("flipped-byte-verify", ["verify", "-w", "ws"], 1, [r"content changed \(sha256 mismatch\)"],
         setup=damage(lambda ws: first_artifact(ws, "payload"), flip=True)),
    Case("flipped-byte-run-recomputes", RUN, 0, [r"cached artifact [0-9a-f]{12} is corrupt \(.*content changed",
                                                 r"recomputing the stage"],
         setup=damage(lambda ws: first_artifact(ws, "payload"), flip=True), writes=(r"^ws/",)),
    Case("garbled-ref-run-recomputes", RUN, 0, [r"warning: \w+: .*refs/[0-9a-f]+\.json: unreadable cache ref; "
                                                r"ignored, the stage is recomputed and the ref rewritten"],
         setup=damage(a_ref, b"not json"), writes=(r"^ws/",)),
    Case("garbled-journal-run", RUN, 2,
         [r"journal\.db: the journal is damaged \(file is not a database\)\. Artifacts and the cache are intact\. "
          r"Recover: `alignpipe run --new-journal`"], setup=damage(journal, b"garbage" * 100)),
    Case("garbled-journal-status", ["status", "-w", "ws"], 2, [r"journal\.db: the journal is damaged"],
         setup=damage(journal, b"garbage" * 100)),
    Case("garbled-journal-new-journal", RUN + ["--new-journal"], 0,
         [r"journal\.db was damaged \(file is not a database\); moved to .*journal\.db\.damaged-",
          r"done \(4 cached\)"], setup=damage(journal, b"garbage" * 100), writes=(r"^ws/\.alignpipe/",)),
    Case("garbled-tag", ["show", "best", "-w", "ws"], 2, [r"no artifact 'zzzz' in this workspace's store"],
         setup=write("ws/tags/best", "zzzz\n")),
]


@pytest.mark.parametrize("case", FRESH, ids=ids(FRESH))
def test_bad_workspace_location(case, tmp_path):
    run_case(case, tmp_path, {})


@pytest.mark.parametrize("case", DAMAGED, ids=ids(DAMAGED))
def test_damaged_workspace(case, tmp_path, example_ws):
    case.setup = chain(copy_tree(example_ws, "ws"), case.setup)
    run_case(case, tmp_path, {})


def test_unwritable_workspace_is_refused(tmp_path):
    (tmp_path / "ws").mkdir()
    subprocess.run(["chattr", "+i", str(tmp_path / "ws")], check=True)  # read-only even for root
    try:
        run_case(Case("ws-not-writable", RUN, 2, [r"workspace .*ws: not writable by this user"]), tmp_path, {})
        run_case(Case("ws-parent-not-writable", RUN[:-1] + ["ws/inner"], 2,
                      [r"workspace .*ws/inner: cannot create it, .*ws is not writable by this user"]), tmp_path, {})
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "ws")], check=True)


def test_quarantine_keeps_the_damaged_copy_and_gc_removes_it(tmp_path, example_ws):
    copy_tree(example_ws, "ws")(tmp_path)
    damage(first_artifact, b"[1, 2")(tmp_path)
    run_case(Case("recompute", RUN, 0, [r"recomputing"], writes=(r"^ws/",)), tmp_path, {})
    (q,) = (tmp_path / "ws" / "quarantine").iterdir()
    assert (q / "manifest.json").read_bytes() == b"[1, 2"
    assert "unreadable manifest" in (q / "QUARANTINED.txt").read_text()
    r = run_case(Case("gc", ["gc", "-w", "ws"], 0, [r"removed .*1 quarantined"], writes=(r"^ws/",)), tmp_path, {})
    assert not any((tmp_path / "ws" / "quarantine").iterdir()), r.stdout
    assert json.loads((tmp_path / "ws" / "refs" / a_ref(tmp_path / "ws").name).read_text())["outputs"]
