"""Tiny torch-free stages for the engine's built-in example pipeline (`alignpipe run --example`).

corpus -> count(words) and count(chars) in parallel -> report. They exercise inputs, params, parallel slots,
checkpoints and summaries without any ML.
"""

from __future__ import annotations

import json
import random
import time

from pydantic import Field

from alignpipe.pipeline.context import StageContext
from alignpipe.pipeline.stagedef import InputDef, StageDef, StrictParams

WORDS = "the a good bad blender kettle lamp chair works broke loud quiet cheap sturdy".split()


class CorpusParams(StrictParams):
    lines: int = Field(default=200, ge=1, description="number of generated lines")
    words_per_line: int = Field(default=8, ge=1, description="words on each line")


def run_corpus(ctx: StageContext) -> None:
    p: CorpusParams = ctx.params
    rng = random.Random(ctx.seed)
    text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(p.words_per_line)) for _ in range(p.lines))
    (ctx.output_dir() / "corpus.txt").write_text(text + "\n")
    ctx.annotate(lines=p.lines)


class CountParams(StrictParams):
    unit: str = Field(default="words", pattern="^(words|chars)$", description="what to count: words or chars")
    delay: float = Field(default=0.0, ge=0, description="seconds to sleep per 50 lines (to watch progress)")


def run_count(ctx: StageContext) -> None:
    p: CountParams = ctx.params
    lines = (ctx.input_path("text") / "corpus.txt").read_text().splitlines()
    ckpt = ctx.checkpoints.latest()
    start, counts = (0, {})
    if ckpt:
        state = json.loads((ckpt.path / "state.json").read_text())
        start, counts = state["line"], state["counts"]
        ctx.log(f"resuming at line {start}")
    for i in range(start, len(lines)):
        for tok in (lines[i].split() if p.unit == "words" else lines[i].replace(" ", "")):
            counts[tok] = counts.get(tok, 0) + 1
        if (i + 1) % 50 == 0:
            ctx.checkpoints.save(i + 1, lambda d, i=i: (d / "state.json").write_text(
                json.dumps({"line": i + 1, "counts": counts})))
            ctx.progress(i + 1, len(lines), p.unit)
            time.sleep(p.delay)
    ctx.log_metrics(len(lines), distinct=len(counts))
    ctx.log(f"{sum(counts.values())} {p.unit} in {len(lines)} lines, {len(counts)} distinct")
    (ctx.output_dir() / "counts.json").write_text(json.dumps(counts, sort_keys=True, indent=1))
    ctx.annotate(distinct=len(counts), total=sum(counts.values()))


def run_report(ctx: StageContext) -> None:
    words = json.loads((ctx.input_path("words") / "counts.json").read_text())
    chars = json.loads((ctx.input_path("chars") / "counts.json").read_text())
    top = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    lines = ["| word | count |", "|---|---|", *(f"| {w} | {c} |" for w, c in top)]
    headline = "\n".join(lines) + f"\n\n{sum(words.values())} words, {sum(chars.values())} letters"
    (ctx.output_dir() / "report.md").write_text(headline + "\n")
    ctx.annotate(headline=headline)


CORPUS = StageDef("example.corpus", "1", CorpusParams, run_corpus, inputs={}, outputs={"out": "dataset"},
                  doc="generate a random text corpus")
COUNT = StageDef("example.count", "1", CountParams, run_count, inputs={"text": InputDef("dataset")},
                 outputs={"out": "metrics"}, doc="count words or characters, checkpointing every 50 lines")
REPORT = StageDef("example.report", "1", StrictParams, run_report,
                  inputs={"words": InputDef("metrics"), "chars": InputDef("metrics")}, outputs={"out": "report"},
                  doc="a markdown table of the most frequent words")
