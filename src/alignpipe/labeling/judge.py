"""HumanJudge: the label stage's `judge: human`. It serves the labeling page, waits for people, and yields each
pair's majority once labeling is over.

The judgments' checkpoint is the SQLite file in the stage's work dir (db.py): every judgment is committed there
before the page acknowledges it, so a killed stage, a killed runner or a rerun a week later reopens the page
where it stopped. Labeling is over when every pair has `overlap` votes or an admin presses "finish"; that freezes
the file, and everything yielded afterwards is a function of it (a crash while writing the output resumes to
the same artifact). Pairs nobody voted on are left out (the stage counts them as unlabeled).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from alignpipe.judges import JudgeReport, Judgment, PairQuery
from alignpipe.labeling import agreement
from alignpipe.labeling.db import LabelDB
from alignpipe.labeling.server import PageServer, free_or_zero

DB_FILE = "labels.db"


def db_path(work_dir: Path) -> Path:
    """The job's file: under ckpt/, the stage's checkpoint dir, so `alignpipe gc` keeps it while the stage is
    unfinished and the stage removes it once published (its judgments are then in the artifact)."""
    return work_dir / "ckpt" / DB_FILE


class HumanJudge:
    def __init__(self, work_dir: Path, *, settings: dict[str, Any], host: str, port: int | None,
                 notice: Callable[..., None], progress: Callable[[float, float], None], poll_s: float = 0.25):
        """settings: overlap, guidelines, seed, title, lease_seconds (stored in the db for `label serve`)."""
        self.path = db_path(work_dir)
        self.settings, self.host, self.port = settings, host, port
        self.notice, self.progress, self.poll_s = notice, progress, poll_s
        self.db: LabelDB | None = None

    def describe(self) -> dict[str, Any]:
        return {"type": "human", "overlap": self.settings["overlap"]}

    def judge(self, pairs: Sequence[PairQuery]) -> Iterator[Judgment]:
        self.db = db = LabelDB(self.path)
        db.configure(**self.settings)
        db.add_pairs((q.key, q.prompt, q.a, q.b) for q in pairs)
        if db.finished() is None:
            self._collect(db)
        votes = agreement.by_pair(db.judgments())
        for q in pairs:
            v = list(votes.get(q.key, {}).values())
            if v:
                outcome = agreement.aggregate(v)
                yield Judgment(q.key, outcome == "a" if outcome in ("a", "b") else None, p_a=agreement.p_a(v))

    def _collect(self, db: LabelDB) -> None:
        port = self.port if self.port is not None else free_or_zero(self.host, db.setting("port"))
        with PageServer(db, self.host, port) as page:
            db.configure(url=page.url, port=page.sock.getsockname()[1])
            link = f"{page.url}login?t={db.one_time_link()}"
            self.notice(f"labeling page {page.url} (admin, one-time link: {link}); invite annotators with "
                        f"`alignpipe label invite NAME --db {self.path}`", url=page.url, admin_link=link,
                        db=str(self.path))
            while not db.finish_if_complete():
                p = db.progress()
                self.progress(p["votes"], p["target"])
                time.sleep(self.poll_s)
        p = db.progress()
        self.progress(p["votes"], p["target"])

    def report(self) -> JudgeReport:
        """Every judgment (who, when, dwell, the order shown) as judgments.jsonl, and agreement in the summary."""
        assert self.db is not None, "report() comes after judge()"
        rows = self.db.judgments()
        votes = [j for j in rows if j["choice"] != "skip"]
        shown_left = sum(j["choice"] == j["shown"][0] for j in votes if j["choice"] in ("a", "b"))
        decided = sum(j["choice"] in ("a", "b") for j in votes)
        per = Counter(j["annotator"] for j in votes)
        skips = Counter(j["annotator"] for j in rows if j["choice"] == "skip")
        human = {"overlap": self.settings["overlap"], "finished": self.db.finished(), "judgments": len(votes),
                 "skips": len(rows) - len(votes),
                 "annotators": {n: {"judgments": per[n], "skips": skips[n]} for n in sorted(set(per) | set(skips))},
                 "shown": dict(Counter(j["shown"] for j in rows)),
                 "left_chosen_rate": shown_left / decided if decided else None,
                 "agreement": agreement.summarize(rows)}
        files = {"judgments.jsonl": [{k: v for k, v in j.items() if k != "id"} for j in rows]}
        # a vote share is not a noise model: no label-noise ceiling for the reward stage to quote
        return JudgeReport(summary={"human": human, "ceiling_accuracy": None}, files=files)
