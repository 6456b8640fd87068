"""`alignpipe plan`: parse, plan (alignpipe.distributed.plan), render. Added to the main CLI by `add_commands(app)`."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alignpipe.pipeline.errors import UserError

out = Console(highlight=False, soft_wrap=True, width=160)
PARTS = {"weights": "weights", "gradients": "grads", "optimizer": "Adam", "gathered": "gathered",
         "activations": "activations", "logits": "logits", "kv_cache": "KV cache"}


def plan(pipeline: str | None = typer.Argument(None, help="pipeline YAML (default: the built-in pipeline)"),
         cluster: str = typer.Option("local", "--cluster", help="NODESxGPUSxGPU (8xA100-80GB, 2x8xH100-80GB), "
                                     "'local' (this machine), or a YAML cluster description"),
         model: str | None = typer.Option(None, "--model", help="plan every model as this size (124M, 125M, 350M, "
                                          "1.3B, 7B, 13B, 30B, 70B; comma-separated or 'all' for a table)"),
         precision: str | None = typer.Option(None, "--precision", help="bf16 or fp32 (default: bf16 for stages "
                                              "on GPUs, fp32 on CPUs)"),
         prompt_len: int = typer.Option(512, "--prompt-len", min=1, help="prompt tokens of a PPO rollout"),
         as_json: bool = typer.Option(False, "--json", help="the plans as JSON")) -> None:
    """Plan each stage on a cluster: memory per device and the placement (exit 2 if a stage cannot fit)."""
    from alignpipe import api
    from alignpipe.distributed.cluster import parse_cluster
    from alignpipe.distributed.memory import SIZES
    from alignpipe.distributed.plan import plan_pipeline

    if precision not in (None, "bf16", "fp32"):
        raise UserError(f"--precision {precision!r}: expected bf16 or fp32")
    where = parse_cluster(cluster)
    pipe = api.load(pipeline, machine=where.machine())
    sizes = list(SIZES) if model == "all" else [s.strip() for s in model.split(",")] if model else [None]
    try:
        results = {size: plan_pipeline(pipe, where, model=size, precision=precision, prompt_len=prompt_len)
                   for size in sizes}
    except ValueError as e:  # an unknown --model size
        raise UserError(f"--model: {e}") from None
    if as_json:
        print(json.dumps({"cluster": where.describe(), "plans": {str(k): [p.as_dict() for p in v]
                                                                  for k, v in results.items()}}, indent=1))
    elif len(sizes) == 1:
        _render(where.describe(), next(iter(results.values())))
    else:
        _render_table(where.describe(), results)
    refused = [p.note for plans in results.values() for p in plans if p.refused]
    if refused and len(sizes) == 1:
        raise UserError(refused)


def _render(cluster: str, plans: list) -> None:
    from alignpipe.distributed.memory import count
    from alignpipe.distributed.placement import PPOPlan, TrainingPlan

    out.print(f"[bold]cluster[/] {cluster}")
    for sp in plans:
        out.print(f"\n[bold]{sp.stage}[/] ({sp.uses})")
        if sp.plan is None:
            out.print(f"  {'[red]' if sp.refused else '[dim]'}{escape(sp.note)}[/]")
            continue
        p = sp.plan
        out.print(f"  devices: {p.devices.describe()}")
        if isinstance(p, TrainingPlan):
            out.print(f"  model:   {p.model.shape.name} ({count(p.model.params)} parameters), micro-batch "
                      f"{p.micro_batch} per device")
            out.print(f"  plan:    {p.describe()}")
            out.print(f"  why:     {escape(p.reason)}")
            _parts([("model", p.footprint)])
        elif isinstance(p, PPOPlan):
            out.print("  models:  " + ", ".join(f"{m} {count(n)}" for m, n in p.sizes.items()))
            out.print(f"  plan:    {escape(p.describe())}; actor replicas {p.replicas}")
            out.print(f"  why:     {escape(p.reason)}")
            _parts([("+".join(g.models), g.footprint) for g in p.groups if g.devices])
        else:
            out.print("  models:  " + ", ".join(f"{m.name} {count(m.params)}" for m in p.models) + " (frozen)")
            _parts([("+".join(m.name for m in p.models), p.footprint)])


def _parts(rows: list) -> None:
    from alignpipe.distributed.memory import GiB

    table = Table(box=None, pad_edge=False, padding=(0, 1))
    table.add_column("  GiB per device")
    for title in (*PARTS.values(), "total", "host"):
        table.add_column(title, justify="right")
    for label, fp in rows:
        cells = [f"{fp.device[k] / GiB:.1f}" if fp.device.get(k) else "-" for k in PARTS]
        table.add_row(f"  {escape(label)}", *cells, f"{fp.total / GiB:.1f}",
                      f"{fp.host_total / GiB:.1f}" if fp.host_total else "-")
    out.print(table)


def _render_table(cluster: str, results: dict) -> None:
    from alignpipe.distributed.memory import gib
    from alignpipe.distributed.placement import PPOPlan, TrainingPlan

    out.print(f"[bold]cluster[/] {cluster}")
    table = Table(show_lines=False)
    for col in ("model", "stage", "plan", "per device"):
        table.add_column(col)
    for size, plans in results.items():
        for sp in plans:
            p = sp.plan
            if isinstance(p, PPOPlan):
                what, need = p.describe(), max(g.footprint.total for g in p.groups)
            elif isinstance(p, TrainingPlan):
                what, need = p.describe(), p.footprint.total
            elif p is not None:
                what, need = "frozen", p.footprint.total
            else:
                if not sp.refused:
                    continue
                what, need = "[red]refused[/] " + escape(sp.note.split(": ", 2)[-1].split(". Add")[0]), None
            table.add_row(str(size), sp.stage, what if what.startswith("[red]") else escape(what),
                          gib(need) if need is not None else "-")
    out.print(table)


def add_commands(app: typer.Typer) -> None:
    app.command("plan")(plan)
