"""generate — K sampled responses per prompt from a causal LM: the candidates that label turns into pairs.

Consumes `model`: any HF causal LM directory (usually πSFT); `prompts`: {"prompt": str | conversation} (or
{"messages": conversation}) records, a file or a dataset directory holding one (e.g. task.reviews'
`pref_prompts`).
Produces `out`: a dataset directory with candidates.jsonl, one record per prompt:
    {"prompt": <as given>, "responses": [str × n], "finished": [bool × n], "num_tokens": [int × n]}
`finished` says the response emitted EOS (else it was cut at max_new_tokens); `responses` are decoded without
special tokens. Summary: the model artifact id, the sampling settings, mean response length in tokens, fraction
finished, prompt counts.

Run alone:
    alignpipe stage run generate -i model=sft/ -i prompts=data/pref_prompts -p n=2 -p temperature=0.7 \\
        --seed 3 -o candidates/

Method: `alignpipe.models.forward.sample_responses`: softmax(logits/τ) with optional nucleus top_p, top_k=0 and
every other logits processor off, set explicitly so a model's generation_config.json cannot inject any (PPO.md
item 5). Prompts go in fixed batches of `batch_size` (left-padded); batch b samples with its own seed
sub_seed(stage seed, b), so the output is a function of (model, prompts, params, seed) only, also after a
resume. The stage seed is the spec's per-stage `seed:` (or the one derived from the pipeline seed; `--seed`
when run alone). Progress is checkpointed every `checkpoint_every` prompts; a restart continues from there.
Prompts whose tokens plus max_new_tokens exceed the model's positions are skipped and counted.
Departures: none for sampling; InstructGPT's labelers ranked K = 4..9 responses, we default to pairs (n = 2).
"""

from __future__ import annotations

from pydantic import Field

from alignpipe.models import max_positions
from alignpipe.pipeline.context import StageContext
from alignpipe.pipeline.errors import StageFailed
from alignpipe.pipeline.stagedef import InputDef, StageDef, StrictParams
from alignpipe.stages import _common


class Params(StrictParams):
    n: int = Field(default=2, ge=1)
    """responses sampled per prompt (K)"""
    temperature: float = Field(default=1.0, gt=0)
    """sampling temperature τ: sample softmax(logits/τ)"""
    top_p: float = Field(default=1.0, gt=0, le=1)
    """nucleus sampling mass; 1.0 = off (keep it off for PPO-consistent samples)"""
    max_new_tokens: int = Field(default=48, ge=1)
    """response length cap in tokens"""
    batch_size: int = Field(default=16, ge=1)
    """prompts per generate call (each expands to n rows)"""
    max_skip_fraction: float = Field(default=0.01, ge=0, le=1)
    """fail if more prompt records are invalid or too long"""
    checkpoint_every: int = Field(default=64, ge=1)
    """prompts between checkpoints (rounded up to whole batches)"""


# ---------------------------------------------------------------------------------------------------------------
# helpers


# ---------------------------------------------------------------------------------------------------------------


def run(ctx: StageContext) -> None:
    from alignpipe.data import parse_prompts
    from alignpipe.models.build import load_causal_lm
    from alignpipe.models.forward import sample_responses, use_fused_kernels
    from alignpipe.train import seed_everything, sub_seed

    p: Params = ctx.params

    # -- seed (each batch samples with its own seed derived from this one)
    seed_everything(ctx.seed)

    # -- inputs, checked before any compute
    _common.require_inputs(ctx, "model", "prompts")
    tokenizer = _common.load_tokenizer(ctx, "model")
    prompts, parse_skips, source = _common.read_dataset(ctx, "prompts", parse_prompts,
                                                        max_skip_fraction=p.max_skip_fraction)
    _common.require_chat_template(ctx, tokenizer, "model", "prompts", prompts)

    # -- model
    model = use_fused_kernels(load_causal_lm(_common.model_dir(ctx, "model")))
    _common.fix_pad_token(ctx, "model", tokenizer, model)

    # -- data: prompt ids in fixed batches
    limit = max_positions(model.config)
    kept, len_skips = _common.fitting_prompts(ctx, tokenizer, prompts, limit=limit, max_new_tokens=p.max_new_tokens,
                                              source=str(source), max_skip_fraction=p.max_skip_fraction)
    if not kept:
        raise StageFailed(f"stage {ctx.stage!r} {_common.describe(ctx, 'prompts')}: no prompt fits the model")
    starts = list(range(0, len(kept), p.batch_size))

    # -- loop: sample batch by batch, each with its own seed; finished batches survive restarts (checkpoints)
    def sample_batch(b: int) -> list[dict]:
        chunk = kept[starts[b]:starts[b] + p.batch_size]
        out = sample_responses(model, tokenizer, [ids for _, ids in chunk], n=p.n, temperature=p.temperature,
                               top_p=p.top_p, max_new_tokens=p.max_new_tokens, seed=sub_seed(ctx.seed, "batch", b))
        finished = out.ended(tokenizer.eos_token_id).tolist()
        tokens = out.responses()
        records = []
        for i, (prompt, _) in enumerate(chunk):
            rows = range(i * p.n, (i + 1) * p.n)
            records.append({
                "prompt": prompt,
                "responses": [tokenizer.decode(tokens[r], skip_special_tokens=True) for r in rows],
                "finished": [bool(finished[r]) for r in rows],
                "num_tokens": [len(tokens[r]) for r in rows],
            })
        return records

    records = _common.resumable_records(ctx, len(starts), sample_batch, every=p.checkpoint_every, total=len(kept),
                                        desc="prompts")

    # -- eval: what was sampled
    lengths = [n for r in records for n in r["num_tokens"]]
    done = [f for r in records for f in r["finished"]]
    mean_length = sum(lengths) / len(lengths)
    fraction_finished = sum(done) / len(done)
    ctx.log(f"{len(records)} prompts × {p.n}: mean length {mean_length:.1f} tokens, {fraction_finished:.0%} ended "
            "with EOS")

    # -- save
    from alignpipe.data.io import write_jsonl

    write_jsonl(ctx.output_dir() / _common.CANDIDATES_FILE, records)
    ctx.annotate(format="candidates", model=ctx.inputs["model"].id, prompts=len(records), responses=len(lengths),
                 sampling={"n": p.n, "temperature": p.temperature, "top_p": p.top_p, "top_k": 0,
                           "max_new_tokens": p.max_new_tokens, "seed": ctx.seed, "batch_size": p.batch_size},
                 mean_length=mean_length, fraction_finished=fraction_finished,
                 skipped=_common.skip_summary(parse_skips, len_skips))


STAGE = StageDef(
    name="generate", version="2", params=Params, run=run,
    inputs={"model": InputDef("model", doc="a HF causal LM directory (usually πSFT)"),
            "prompts": InputDef("dataset", doc='{"prompt"} records: a file or a dataset dir')},
    outputs={"out": "dataset"}, doc=__doc__ or "",
)
