"""Helpers shared by the model stages (pretrain, sft, generate, reward; ppo and evaluate too): reading dataset
inputs, loading HF model inputs, and the stage-boundary checks that run before any compute.

Every check raises StageFailed (exit 2, no traceback, no retry) with a message naming the stage, the input
(artifact id or path) and the field, and saying the fix. Nothing here imports torch at module level.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alignpipe.data.errors import DataError, SkipCounter
from alignpipe.models import max_positions
from alignpipe.models.files import model_file_problems
from alignpipe.pipeline.context import StageContext
from alignpipe.pipeline.errors import StageFailed
from alignpipe.pipeline.store import MANIFEST

DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet")
CANDIDATES_FILE = "candidates.jsonl"  # generate -> label, reward calibration
PREFERENCES_FILE = "preferences.jsonl"  # label -> reward
RECORDS_FILE = "records.jsonl"  # finished records inside a sampling stage's checkpoint


def describe(ctx: StageContext, name: str) -> str:
    """'input NAME (artifact 1a2b3c4d5e6f at PATH)' for messages."""
    inp = ctx.inputs[name]
    what = "artifact" if inp.manifest is not None else "external input"
    return f"input {name!r} ({what} {inp.id[:12]} at {inp.path})"


def require_inputs(ctx: StageContext, *names: str) -> None:
    """Manual mode runs stages without spec validation: refuse missing inputs with a clear message."""
    missing = [n for n in names if n not in ctx.inputs]
    if missing:
        raise StageFailed(f"stage {ctx.stage!r}: missing input(s) {', '.join(map(repr, missing))}; "
                          f"give them with `-i NAME=PATH` (or `inputs:` in the pipeline spec)")


@contextmanager
def data_errors(ctx: StageContext, name: str) -> Iterator[None]:
    """Turn DataError (names file, record, field and fix) into StageFailed naming the stage and input."""
    try:
        yield
    except DataError as e:
        raise StageFailed(f"stage {ctx.stage!r} {describe(ctx, name)}: {e}") from None


# -- datasets ---------------------------------------------------------------------------------------------------
def dataset_file(path: Path, *, preferred: Sequence[str] = (), what: str = "dataset") -> Path:
    """The data file of a dataset input: the path itself if it is a file, else the one data file in the dir.

    A directory may hold several data files only if one of `preferred` (e.g. "candidates.jsonl") is among them.
    """
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(str(path), None, None, f"{what} not found", "check the input path")
    for name in preferred:
        if (path / name).is_file():
            return path / name
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                   and p.name != MANIFEST and not p.name.startswith("."))
    if len(files) == 1:
        return files[0]
    found = ", ".join(p.name for p in files) or "none"
    raise DataError(str(path), None, None, f"expected one data file (.jsonl/.json/.parquet) in the {what} "
                    f"directory, found {found}", "point the input at the file itself or keep one data file")


def read_dataset(
    ctx: StageContext,
    name: str,
    parse: Callable[[list[dict[str, Any]], str, SkipCounter], list[Any]],
    *,
    max_skip_fraction: float,
    preferred: Sequence[str] = (),
) -> tuple[list[Any], SkipCounter, Path]:
    """Read and validate input `name` with a data.formats parse_* function: (items, skip counter, file).

    Bad records are skipped and counted; more than `max_skip_fraction` of them fails the stage.
    """
    from alignpipe.data.io import read_records

    require_inputs(ctx, name)
    with data_errors(ctx, name):
        path = dataset_file(ctx.input_path(name), preferred=preferred)
        skips = SkipCounter(str(path), max_fraction=max_skip_fraction)
        items = parse(read_records(path), str(path), skips)
    if not items:
        raise StageFailed(f"stage {ctx.stage!r} {describe(ctx, name)}: no usable records in {path}")
    if skips.skipped:
        ctx.log(f"{name}: skipped {skips.skipped} of {skips.seen} records {skips.summary()['by_reason']}")
    return items, skips, path


def read_candidates(ctx: StageContext, name: str) -> tuple[list[dict[str, Any]], Path]:
    """A generate output's records ({"prompt", "responses": [...], ...}) and the file they came from."""
    from alignpipe.data.io import read_records

    require_inputs(ctx, name)
    with data_errors(ctx, name):
        path = dataset_file(ctx.input_path(name), preferred=(CANDIDATES_FILE,))
        records = read_records(path)
    for i, rec in enumerate(records):
        if "prompt" not in rec or not isinstance(rec.get("responses"), list):
            raise StageFailed(f"stage {ctx.stage!r} {describe(ctx, name)}: {path} record {i} needs fields 'prompt' "
                              "and a list 'responses' (a generate stage's output)")
    return records, path


def skip_summary(*counters: SkipCounter) -> dict[str, Any]:
    """Merged {seen, skipped, by_reason} of several passes (the first pass's `seen` is the record count)."""
    by_reason: dict[str, int] = {}
    for c in counters:
        for reason, n in c.counts.items():
            by_reason[reason] = by_reason.get(reason, 0) + n
    return {"records": counters[0].seen if counters else 0, "skipped": sum(by_reason.values()),
            "by_reason": dict(sorted(by_reason.items()))}


def fitting_prompts(  # noqa: PLR0913 — the fit depends on each of these
    ctx: StageContext,
    tokenizer: Any,
    prompts: Sequence[Any],
    *,
    limit: int | None,
    max_new_tokens: int,
    source: str,
    max_skip_fraction: float,
    name: str = "prompts",
) -> tuple[list[tuple[Any, list[int]]], SkipCounter]:
    """(prompt, token ids) of the prompts whose ids plus max_new_tokens fit `limit` positions (the model's);
    the others are skipped and counted (reason too_long), failing past max_skip_fraction. Prompts are encoded
    as every stage encodes them (alignpipe.data.tokenize.encode_prompt)."""
    from alignpipe.data.tokenize import encode_prompt

    skips = SkipCounter(source, max_fraction=max_skip_fraction)
    kept = []
    for i, prompt in enumerate(prompts):
        ids = encode_prompt(tokenizer, prompt)
        skips.count()
        if limit is not None and len(ids) + max_new_tokens > limit:
            skips.skip(DataError(source, i, "prompt", f"{len(ids)} prompt tokens + max_new_tokens {max_new_tokens} "
                                 f"exceed the model's {limit} positions", "shorten the prompt or lower max_new_tokens",
                                 "too_long"))
        elif not ids:
            skips.skip(DataError(source, i, "prompt", "encodes to no tokens", "give non-empty prompts", "empty"))
        else:
            kept.append((prompt, ids))
    with data_errors(ctx, name):
        skips.check()
    return kept, skips


# -- models -----------------------------------------------------------------------------------------------------
def model_dir(ctx: StageContext, name: str) -> Path:
    """The HF directory of model input `name`, checked to hold config.json and a tokenizer."""
    require_inputs(ctx, name)
    path = ctx.input_path(name)
    if not (path / "config.json").is_file():
        raise StageFailed(f"stage {ctx.stage!r} {describe(ctx, name)} is not a HF model directory (no config.json); "
                          "connect a model output (pretrain, sft, reward) or a save_pretrained directory")
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise StageFailed(f"stage {ctx.stage!r} {describe(ctx, name)} has no tokenizer (tokenizer.json); save the "
                          "tokenizer with the model (tokenizer.save_pretrained(dir))")
    problems = _model_file_problems(path)
    if problems:
        raise StageFailed(f"stage {ctx.stage!r} {describe(ctx, name)}: " + "; ".join(problems))
    return path


@functools.cache  # a stage asks for the same input's directory several times: read its files once
def _model_file_problems(path: Path) -> tuple[str, ...]:
    return tuple(model_file_problems(path))


def load_tokenizer(ctx: StageContext, name: str) -> Any:
    """The tokenizer of model input `name`, refused without an EOS token (nothing could end a response)."""
    from alignpipe.models.build import load_tokenizer as _load

    path = model_dir(ctx, name)
    tok = _load(path)
    if tok.eos_token_id is None:
        raise StageFailed(f"stage {ctx.stage!r} {describe(ctx, name)}: the tokenizer has no eos_token "
                          "(tokenizer_config.json field 'eos_token'); set one, e.g. "
                          "tokenizer.eos_token = '<|eos|>', and resave")
    return tok


def fix_pad_token(ctx: StageContext, name: str, tokenizer: Any, model: Any = None) -> bool:
    """pad ≠ eos (PPO.md item 1): add a dedicated pad token when missing or equal to eos, and say so."""
    from alignpipe.models.tokenizer import ensure_pad_token

    before = tokenizer.pad_token_id
    if not ensure_pad_token(tokenizer, model) or before == tokenizer.pad_token_id:
        return False
    was = "missing" if before is None else f"equal to eos (id {before})"
    ctx.log(f"{describe(ctx, name)}: pad token was {was}; added pad token {tokenizer.pad_token!r} "
            f"(id {tokenizer.pad_token_id}), distinct from eos (id {tokenizer.eos_token_id}); the output "
            "artifact's tokenizer and config carry it")
    return True


def require_chat_template(ctx: StageContext, tokenizer: Any, model: str, data: str, prompts: Sequence[Any]) -> None:
    """Chat data needs the model's chat template: refuse before tokenizing, naming both inputs."""
    first = next((i for i, p in enumerate(prompts) if isinstance(p, list)), None)
    if first is not None and not getattr(tokenizer, "chat_template", None):
        raise StageFailed(f"stage {ctx.stage!r}: {describe(ctx, data)} holds chat conversations (record {first}) "
                          f"but the tokenizer of {describe(ctx, model)} has no chat template "
                          "(tokenizer_config.json field 'chat_template'). Fix: use a model whose tokenizer has a "
                          "chat template (pretrain with chat_template: true) or give plain-text prompts")


def check_tokenizers(ctx: StageContext, tokenizers: Mapping[str, Any]) -> None:
    """Inputs that exchange token ids (policy, reference, reward model, critic) share one tokenizer."""
    from alignpipe.models.forward import check_tokenizers_compatible

    try:
        check_tokenizers_compatible({describe(ctx, n): t for n, t in tokenizers.items()})
    except ValueError as e:
        raise StageFailed(f"stage {ctx.stage!r}: {e}") from None


def resolve_max_len(ctx: StageContext, requested: int | None, config: Any, model: str, field: str = "max_len") -> int:
    """params.<field>, defaulting to (and refused above) the model's max positions."""
    limit = max_positions(config)
    if requested is None:
        return limit or 1024
    if limit is not None and requested > limit:
        raise StageFailed(f"stage {ctx.stage!r} params.{field}={requested} exceeds the {limit} positions of "
                          f"{describe(ctx, model)}; lower {field} to at most {limit}")
    return requested


def upstream_model_id(ctx: StageContext, name: str) -> str | None:
    """The id of the model input of the stage that produced input `name` (e.g. generate's model), if recorded."""
    manifest = ctx.inputs[name].manifest or {}
    return (manifest.get("inputs", {}).get("model") or {}).get("id")


def score_function(ctx: StageContext, field: str) -> Callable[[list[str], list[Any]], list[float]] | None:
    """params.<field> ('package.module:callable' or null) as f(responses, prompts) -> floats (alignpipe.judges'
    convention: a callable with one positional parameter gets the responses only)."""
    from alignpipe.judges import score_function as load

    ref = getattr(ctx.params, field)
    if ref is None:
        return None
    try:
        return load(ref)
    except ValueError as e:
        raise StageFailed(f"stage {ctx.stage!r} params.{field}: {e}") from None


def position_limit(ctx: StageContext, names: list[str]) -> int | None:
    """The fewest positions among the model inputs `names` (from their config.json; None if none says)."""
    from transformers import AutoConfig

    limits = [max_positions(AutoConfig.from_pretrained(str(model_dir(ctx, n)))) for n in names]
    return min((x for x in limits if x), default=None)


# -- resumable sampling -----------------------------------------------------------------------------------------
def resumable_records(ctx: StageContext, batches: int, produce: Callable[[int], list[dict[str, Any]]], *,
                      every: int, total: int, desc: str) -> list[dict[str, Any]]:
    """The records of `batches` batches, batch b's made by produce(b), checkpointed (the records so far) once
    `every` new records have accumulated; a restart continues after the newest checkpoint's batch. produce(b)
    must depend on b alone (its own seed), so a resumed stage writes what an uninterrupted one would
    (generate, bon)."""
    from alignpipe.train import Checkpointer, run_key

    ckpt = Checkpointer(ctx.checkpoints, key=run_key(ctx), log=ctx.log)
    resumed = ckpt.restore()
    records: list[dict[str, Any]] = []
    if resumed:
        text = (resumed.path / RECORDS_FILE).read_text(encoding="utf-8")
        records = [json.loads(line) for line in text.splitlines()]
    since = 0
    for b in range(resumed.state["batches_done"] if resumed else 0, batches):
        new = produce(b)
        records += new
        since += len(new)
        ctx.progress(len(records), total, desc)
        if since >= every and b + 1 < batches:
            since = 0
            lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            ckpt.save(len(records), {"batches_done": b + 1},
                      files=lambda d, lines=lines: (d / RECORDS_FILE).write_text(lines, encoding="utf-8"))
    return records
