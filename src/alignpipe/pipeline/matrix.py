"""Sweeps in the spec: a stage's `matrix` fans it out into one ordinary stage per combination of values.

    ppo:
      uses: ppo
      params: {rollouts: 48}
      matrix: {kl_target: [1, 2, 4]}        # a grid too: {kl_target: [1, 2], seed: [0, 1, 2]}

becomes the stages `ppo@kl_target=1`, `ppo@kl_target=2`, `ppo@kl_target=4`: each an ordinary stage with its own
params, fingerprint and cache entry, so changing one value reruns that branch (and what reads it) only. A key is a
param of the stage type, or `seed` (the stage seed). Branches share the seed the stage would have had (derived from
the pipeline seed and the stage's own name) unless the matrix sweeps `seed`: they differ in the swept values only.

What reads a swept stage:
- `rlhf: ppo.policy` — the reader fans out too, one branch per ppo branch (`evaluate@kl_target=2` reads
  `ppo@kl_target=2.policy`). Readers of two swept stages pair their branches on the keys both sweep and take the
  product of the others.
- `rlhf: ppo@*.policy` — the reader collects every branch: the input becomes `rlhf@kl_target=1`, ... one per
  branch (for stage types with named inputs, like evaluate, whose `models` entry `rlhf` then names the family).
  A reader fanned out itself (over keys ppo also sweeps) collects the branches that agree with its own.
- `rlhf: ppo@kl_target=2.policy` — one branch.

`expand_matrix` is a pure function from the raw spec (the YAML's dict) to the raw spec without matrices;
validation then sees plain stages, and so do the exporters. Branch names are file-name and shell safe, need no
quotes in YAML flow mappings (one key), and print as they are in rich output (`@` as in DVC's foreach stages);
values are numbers, booleans or strings of letters, digits and `_.+-`.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Callable
from typing import Any

from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.fingerprint import derive_seed

_KEY = r"[A-Za-z_][A-Za-z0-9_]*"
_VALUE = r"[A-Za-z0-9_.+-]+"
BRANCH_SUFFIX = rf"(?:@{_KEY}={_VALUE}(?:,{_KEY}={_VALUE})*)?"  # for the spec's name and reference patterns
COLLECT = "@*"

Combo = dict[str, tuple[str, Any]]  # key -> (label, value)
ParamNames = Callable[[str], "set[str] | None"]


def label(value: Any) -> str:
    """A value as it appears in a branch name: 2, 0.5, 1e-05, true, adam."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str) and value and all(c.isalnum() or c in "_.+-" for c in value) and value.isascii():
        return value
    raise ValueError(f"{value!r} cannot name a branch; matrix values must be numbers, booleans or strings of "
                     "letters, digits and _.+-")


def branch_name(base: str, combo: Combo) -> str:
    return f"{base}@{','.join(f'{k}={lab}' for k, (lab, _) in combo.items())}" if combo else base


def split_name(name: str) -> tuple[str, dict[str, str]]:
    """'ppo@kl_target=2,seed=1' -> ('ppo', {'kl_target': '2', 'seed': '1'}); a plain name -> (name, {})."""
    base, _, inner = name.partition("@")
    return base, dict(part.split("=", 1) for part in inner.split(",") if "=" in part)


def split_ref(ref: str) -> tuple[str, str]:
    """'stage.output' -> (stage, output), output '' when absent. A branch's values may hold dots
    ('ppo@lr=0.5.policy'): there the output is what follows the last dot, if it can name an output."""
    if "@" not in ref:
        stage, _, output = ref.partition(".")
        return stage, output
    stage, _, output = ref.rpartition(".")
    if stage and "@" in stage and output.isidentifier():
        return stage, output
    return ref, ""


def combos(matrix: dict[str, list[Any]]) -> list[Combo]:
    """Every combination, the first key varying slowest (declaration order)."""
    keys = list(matrix)
    return [{k: (label(v), v) for k, v in zip(keys, values, strict=True)}
            for values in itertools.product(*(matrix[k] for k in keys))]


def stage_param_names(uses: str) -> set[str] | None:
    """The params a stage type takes; None when it takes any (undecorated user functions) or is unknown."""
    from alignpipe.pipeline.stagedef import StageLookupError, resolve_stage

    try:
        params = resolve_stage(uses).params
    except (StageLookupError, ImportError):  # validation reports unknown types; the matrix check skips them
        return None
    return None if params.model_config.get("extra") == "allow" else set(params.model_fields)


# ---------------------------------------------------------------------------------------------------------------
# checking one stage's matrix


def _check_matrix(name: str, spec: dict[str, Any], where: str, param_names: ParamNames) -> list[str]:
    matrix = spec.get("matrix")
    if not isinstance(matrix, dict) or not matrix:
        return [f"{where}: expected a mapping of param -> list of values, e.g. matrix: {{kl_target: [1, 2, 4]}}"]
    problems = []
    known = param_names(str(spec.get("uses", ""))) if isinstance(spec.get("uses"), str) else None
    for key, values in matrix.items():
        at = f"{where}.{key}"
        if key == "seed":
            if spec.get("seed") is not None:
                problems.append(f"{at}: the stage sets seed: {spec['seed']} too; keep one of them")
        elif known is not None and key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"its params: {', '.join(sorted(known))}"
            problems.append(f"{at}: stage type {spec['uses']!r} has no param {key!r}; {hint}")
        elif key in (spec.get("params") or {}):
            problems.append(f"{at}: {key!r} is also set in params; sweep it here or fix it there, not both")
        problems += _check_values(at, values)
    return problems


def _check_values(at: str, values: Any) -> list[str]:
    if not isinstance(values, list):
        return [f"{at}: expected a list of values, got {values!r}; write [{values!r}] for one value"]
    if not values:
        return [f"{at}: empty list; give at least one value (a list of one runs the stage once)"]
    try:
        labels = [label(v) for v in values]
    except ValueError as e:
        return [f"{at}: {e}"]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    return [f"{at}: value {dup[0]} is listed twice; branches must differ"] if dup else []


# ---------------------------------------------------------------------------------------------------------------
# fan-out through the graph


def _join(left: list[Combo], right: list[Combo]) -> list[Combo]:
    """Pair combos on their common keys; the other keys multiply."""
    out = []
    for a in left:
        for b in right:
            if all(a[k][0] == b[k][0] for k in a.keys() & b.keys()):
                out.append({**a, **b})
    return out


class _Expander:
    def __init__(self, raw: dict[str, Any], stages: dict[str, Any], source: str, param_names: ParamNames):
        self.raw, self.stages, self.source, self.param_names = raw, stages, source, param_names
        self.branches: dict[str, list[Combo]] = {}  # stage -> its combos ([{}] = not fanned out)
        self.problems: list[str] = []
        self.broken: set[str] = set()  # stages whose matrix has problems
        self._visiting: set[str] = set()

    def _refs(self, spec: dict[str, Any]) -> list[tuple[str, str, str, str]]:
        """(input name, upstream stage, output, mode) of the inputs naming a stage: mode 'plain' or 'collect'."""
        out = []
        for iname, value in (spec.get("inputs") or {}).items():
            if not isinstance(value, str):
                continue
            stage, output = split_ref(value)
            if stage.endswith(COLLECT) and stage[:-len(COLLECT)] in self.stages:
                out.append((iname, stage[:-len(COLLECT)], output, "collect"))
            elif stage in self.stages and output:
                out.append((iname, stage, output, "plain"))
        return out

    def combos_of(self, name: str) -> list[Combo]:
        if name in self.branches:
            return self.branches[name]
        if name in self._visiting:  # a cycle: validation reports it on the expanded graph
            return [{}]
        self._visiting.add(name)
        spec = self.stages[name] if isinstance(self.stages[name], dict) else {}
        where = f"{self.source}: stages.{name}"
        own = [{}]
        if "matrix" in spec:
            problems = _check_matrix(name, spec, f"{where}.matrix", self.param_names)
            self.problems += problems
            own = combos(spec["matrix"]) if not problems else [{}]
            self.broken |= {name} if problems else set()
        inherited: list[Combo] = [{}]
        for iname, up, _, mode in self._refs(spec):
            up_combos = self.combos_of(up)
            if mode == "collect":
                if up_combos == [{}] and up not in self.broken:  # (a broken matrix is reported once, above)
                    self.problems.append(f"{where}.inputs.{iname}: {up}@* collects the branches of a matrix, but "
                                         f"stage {up!r} has none; read it as {up}.OUTPUT")
                continue
            joined = _join(inherited, up_combos)
            if not joined:
                self.problems.append(f"{where}.inputs.{iname}: the branches of {up!r} pair with no branch of the "
                                     "stage's other swept inputs (no common values)")
                joined = inherited
            inherited = joined
        clash = own[0].keys() & inherited[0].keys()
        if clash:
            self.problems.append(f"{where}.matrix.{sorted(clash)[0]}: an input already sweeps "
                                 f"{sorted(clash)[0]!r}; collect it with STAGE@*.OUTPUT or drop it here")
            inherited = [{}]
        self.branches[name] = [{**o, **i} for o in own for i in inherited]
        self._visiting.discard(name)
        return self.branches[name]

    def emit(self, name: str) -> dict[str, Any]:
        spec = dict(self.stages[name])
        own_keys = list(spec.pop("matrix", None) or {})
        out = {}
        for combo in self.combos_of(name):
            branch = dict(spec)
            swept = {k: v for k, (_, v) in combo.items() if k in own_keys}
            if swept.keys() - {"seed"}:
                branch["params"] = {**(spec.get("params") or {}), **{k: v for k, v in swept.items() if k != "seed"}}
            if "seed" in swept:
                branch["seed"] = swept["seed"]
            elif combo and spec.get("seed") is None and isinstance(self.raw.get("seed", 0), int):
                branch["seed"] = derive_seed(self.raw.get("seed", 0), name)  # the stage's own seed, in every branch
            branch["inputs"] = self._inputs(spec, combo)
            out[branch_name(name, combo)] = branch
        return out

    def _inputs(self, spec: dict[str, Any], combo: Combo) -> dict[str, Any]:
        inputs = dict(spec.get("inputs") or {})
        for iname, up, output, mode in self._refs(spec):
            up_combos = self.branches.get(up, [{}])
            if up_combos == [{}]:
                continue
            if mode == "collect":  # the branches that agree with this reader's own; named by the other keys
                del inputs[iname]
                for c in _join([combo], up_combos):
                    rest = {k: v for k, v in c.items() if k in up_combos[0] and k not in combo}
                    inputs[branch_name(iname, rest)] = f"{branch_name(up, {k: c[k] for k in up_combos[0]})}.{output}"
            else:
                inputs[iname] = f"{branch_name(up, {k: combo[k] for k in up_combos[0]})}.{output}"
        return inputs


def _uses_matrix(stages: dict[str, Any]) -> bool:
    return any(isinstance(s, dict) and ("matrix" in s or any(
        isinstance(v, str) and COLLECT in v for v in (s.get("inputs") or {}).values())) for s in stages.values())


def expand_matrix(raw: dict[str, Any], source: str, param_names: ParamNames = stage_param_names) -> dict[str, Any]:
    """The raw spec with every matrix expanded into branch stages; raises UserError listing every problem.
    A spec without matrices comes back unchanged (the same object)."""
    stages = raw.get("stages") if isinstance(raw, dict) else None
    if isinstance(stages, list):  # the Python API's list form; malformed lists are left to validation
        names = [s.get("name") for s in stages if isinstance(s, dict)]
        if len(names) != len(stages) or None in names or len(set(names)) != len(names):
            return raw
        stages = {s["name"]: {k: v for k, v in s.items() if k != "name"} for s in stages}
    if not isinstance(stages, dict) or not _uses_matrix(stages):
        return raw
    ex = _Expander(raw, stages, source, param_names)
    for name in stages:
        ex.combos_of(name)
    if ex.problems:
        raise UserError(ex.problems)
    expanded: dict[str, Any] = {}
    for name in stages:
        expanded.update(ex.emit(name) if isinstance(stages[name], dict) else {name: stages[name]})
    return {**raw, "stages": expanded}
