"""task.reviews — the embedded default task's data, generated offline from the stage seed (no torch).

Produces five datasets, each a directory with data.jsonl:
    corpus        {"text"}                      raw reviews for pretraining a tiny base model
    demos         {"prompt", "completion"}      demonstrations for SFT (mixed sentiment)
    pref_prompts  {"prompt"}                    prompts to sample response pairs from πSFT for labeling
    rl_prompts    {"prompt"}                    prompts for PPO
    eval_prompts  {"prompt"}                    held-out prompts (never in any other split or the corpus)

Run alone:
    alignpipe stage run task.reviews -p demos=2000 -o data/
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from alignpipe.pipeline.context import StageContext
from alignpipe.pipeline.stagedef import StageDef, StrictParams

DATA_FILE = "data.jsonl"


class Params(StrictParams):
    corpus: int = Field(default=6000, ge=1)
    """raw documents for pretraining"""
    demos: int = Field(default=2000, ge=1)
    """SFT demonstrations"""
    pref_prompts: int = Field(default=512, ge=1)
    """prompts for preference pairs"""
    rl_prompts: int = Field(default=512, ge=1)
    """prompts for PPO"""
    eval_prompts: int = Field(default=128, ge=1)
    """held-out evaluation prompts"""


def _write(dir_: Path, records: list[dict]) -> None:
    from alignpipe.data.io import write_jsonl

    write_jsonl(dir_ / DATA_FILE, records)


def run(ctx: StageContext) -> None:
    from alignpipe.task import make_corpus, make_demonstrations, make_prompts

    p: Params = ctx.params
    s = ctx.seed
    _write(ctx.output_dir("corpus"), [{"text": t} for t in make_corpus(s, p.corpus)])
    _write(ctx.output_dir("demos"), make_demonstrations(s, p.demos))
    for name, split, n in (("pref_prompts", "pref", p.pref_prompts), ("rl_prompts", "rl", p.rl_prompts),
                           ("eval_prompts", "eval", p.eval_prompts)):
        _write(ctx.output_dir(name), [{"prompt": q} for q in make_prompts(s, n, split)])
        ctx.annotate(name, records=n, split=split)
    ctx.annotate("corpus", records=p.corpus)
    ctx.annotate("demos", records=p.demos)


STAGE = StageDef(
    name="task.reviews", version="1", params=Params, run=run, inputs={},
    outputs={"corpus": "dataset", "demos": "dataset", "pref_prompts": "dataset", "rl_prompts": "dataset",
             "eval_prompts": "dataset"},
    doc=__doc__ or "",
)
