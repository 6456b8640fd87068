"""Metaflow: flow.py, a FlowSpec with one step per stage.

Metaflow graphs are split/join structured, so stages are laid out by depth: each group of independent stages is
a static split (its steps run in parallel) closed by a join step. Spec -> Metaflow: retries -> `@retry(times=N,
minutes_between_retries=0)` (Metaflow counts whole minutes and has no exponential backoff); timeout ->
`@timeout(seconds=N)`; resources -> `@resources(cpu, memory in MB, gpu)` (read by @kubernetes/@batch, not by
local runs); cache -> none in Metaflow besides `resume`, which clones the steps that finished in the failed run
(their artifacts are in alignpipe's store already). Each step records `current.run_id` as its platform run id.
"""

from __future__ import annotations

import math

from alignpipe.export._py import guarded_imports, header, stage_exec_function
from alignpipe.export.ir import PipelineIR, StageIR


def render(ir: PipelineIR) -> dict[str, str]:
    doc, consts = header(ir, "a Metaflow flow", "python flow.py run   (after a failure: python flow.py resume)")
    levels = ir.levels()
    names = _step_names(ir, levels)
    # what follows each level: the next level's steps (a split when several), through a join after a split
    after = [[names[s] for s in lvl] for lvl in levels[1:]] + [["end"]]
    steps = [_step("start", [], [names[s] for s in levels[0]])]
    for i, lvl in enumerate(levels):
        nxt = [f"join_{i}"] if len(lvl) > 1 else after[i]
        steps += [_step(names[s], _decorators(ir.stage(s)), nxt, stage=s) for s in lvl]
        if len(lvl) > 1:
            steps.append(_step(f"join_{i}", [], after[i], join=True))
    steps.append(_step("end", [], None))
    cls = "".join(part.capitalize() for part in ir.ident.split("_")) + "Flow"
    code = f'''{doc}from __future__ import annotations

import shutil
import subprocess
import sys

{guarded_imports([f"from metaflow import {', '.join(_imports(ir))}"], "metaflow", "Metaflow")}
{consts}

{stage_exec_function("metaflow")}

class {cls}(FlowSpec):
{"".join(steps)}

if __name__ == "__main__":
    {cls}()
'''
    return {"flow.py": code}


def _step_names(ir: PipelineIR, levels: list[list[str]]) -> dict[str, str]:
    reserved = {"start", "end"} | {f"join_{i}" for i in range(len(levels))}
    return {s.name: f"stage_{s.ident}" if s.ident in reserved else s.ident for s in ir.stages}


def _decorators(s: StageIR) -> list[str]:
    res = [f"cpu={math.ceil(s.cpus)}"] + ([f"memory={math.ceil(s.memory / 2**20)}"] if s.memory else []) \
        + ([f"gpu={s.gpus}"] if s.gpus else [])
    out = [f"@resources({', '.join(res)})"]
    if s.retries:
        out.append(f"@retry(times={s.retries}, minutes_between_retries=0)")
    if s.timeout:
        out.append(f"@timeout(seconds={math.ceil(s.timeout)})")
    return out


def _step(name: str, decorators: list[str], nxt: list[str] | None, stage: str | None = None,
          join: bool = False) -> str:
    lines = [*decorators, "@step", f"def {name}(self{', inputs' if join else ''}):"]
    if stage is not None:
        lines.append(f"    stage_exec({stage!r}, current.run_id)")
    lines.append(f"    self.next({', '.join(f'self.{n}' for n in nxt)})" if nxt else "    pass")
    return "\n" + "".join(f"    {line}\n" for line in lines)


def _imports(ir: PipelineIR) -> list[str]:
    used = {"retry": any(s.retries for s in ir.stages), "timeout": any(s.timeout for s in ir.stages)}
    return ["FlowSpec", "current", "resources", *(d for d, on in used.items() if on), "step"]
