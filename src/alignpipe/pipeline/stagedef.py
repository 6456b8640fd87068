"""What a stage type is: its params model, inputs, outputs, version and `run(ctx)`.

A built-in stage type is a module in `alignpipe.stages` that ends with

    STAGE = StageDef(name="sft", version="1", params=Params, inputs={...}, outputs={...}, run=run)

A user stage is any `package.module:function`. Decorate it with `@alignpipe.stage(...)` to declare params,
inputs and outputs; an undecorated function takes free-form params and produces one output named `out`,
and its implementation version is the hash of its module's source.

Stage modules never import torch at module level: the engine imports them to validate params and compute
fingerprints, and a no-op rerun must not pay for torch.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import traceback
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

KINDS = ("model", "dataset", "metrics", "report", "artifact")


def _leaf_types(annotation: Any) -> set[Any]:
    """The types a field admits: unions and Optional unwrapped, Literal values as their types."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_leaf_types(a) for a in typing.get_args(annotation)))
    if origin is typing.Literal:
        return {type(a) for a in typing.get_args(annotation)}
    return {annotation}


class StrictParams(BaseModel):
    """Base for stage params (and the spec's own models): unknown keys are errors, values are frozen after
    parsing, numbers are finite, and booleans and numbers do not stand in for each other (YAML's `true` is no
    1, and `1` or `yes` is no flag). Strings that spell a number still parse (PyYAML reads `1e-4` as a string)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _bools_are_not_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        admits = _leaf_types(cls.model_fields[info.field_name].annotation)
        if isinstance(value, bool) and bool not in admits and admits & {int, float}:
            raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
        if admits == {bool} and not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value


class FreeParams(BaseModel):
    """Params of an undecorated user function: anything JSON-serializable."""

    model_config = ConfigDict(extra="allow", frozen=True)


@dataclass(frozen=True)
class InputDef:
    kind: str = "artifact"
    required: bool = True
    doc: str = ""


@dataclass(frozen=True)
class StageDef:
    name: str
    version: str
    params: type[BaseModel]
    run: Callable[[Any], None]
    inputs: dict[str, InputDef] | None = None  # None = any names accepted (undecorated user function)
    outputs: dict[str, str] = field(default_factory=lambda: {"out": "artifact"})
    doc: str = ""
    default_cpus: float = 1.0
    # cross-field validation at spec time: (params, names of the inputs given) -> problems ("field: message")
    check: Callable[[BaseModel, set[str]], list[str]] | None = None
    # runs as torch.distributed ranks when its resources ask for more than one process (alignpipe.distributed)
    distributed: bool = False
    # the models a run holds, for resources.placement: (params, names of the inputs given) -> names
    models: Callable[[BaseModel, set[str]], tuple[str, ...]] | None = None

    def parse_params(self, raw: dict[str, Any]) -> BaseModel:
        return self.params.model_validate(raw or {})


def stage(
    *,
    outputs: dict[str, str] | None = None,
    inputs: dict[str, InputDef | str] | None = None,
    params: type[BaseModel] | None = None,
    version: str | None = None,
    cpus: float = 1.0,
    distributed: bool = False,
) -> Callable[[Callable], Callable]:
    """Decorator declaring a user function as a stage type (`uses: mypkg.mod:func`). `distributed`: it may run as
    several processes (resources procs_per_node, nodes), each with the torchrun environment; rank 0 publishes."""

    def wrap(fn: Callable) -> Callable:
        fn.__alignpipe_stage__ = {  # type: ignore[attr-defined]
            "outputs": outputs or {"out": "artifact"},
            "inputs": None if inputs is None else {k: _as_input(v) for k, v in inputs.items()},
            "params": params or FreeParams,
            "version": version,
            "cpus": cpus,
            "distributed": distributed,
        }
        return fn

    return wrap


def _as_input(v: InputDef | str) -> InputDef:
    return v if isinstance(v, InputDef) else InputDef(kind=v)


def _source_version(fn: Callable) -> str:
    try:
        src = inspect.getsource(inspect.getmodule(fn))  # the whole module: helpers it calls count too
    except (OSError, TypeError):
        src = getattr(fn, "__qualname__", repr(fn))
    return "src-" + hashlib.sha256(src.encode()).hexdigest()[:16]


def stage_from_function(uses: str, fn: Callable) -> StageDef:
    meta = getattr(fn, "__alignpipe_stage__", None) or {}
    return StageDef(
        name=uses,
        version=meta.get("version") or _source_version(fn),
        params=meta.get("params", FreeParams),
        run=fn,
        inputs=meta.get("inputs"),
        outputs=meta.get("outputs", {"out": "artifact"}),
        doc=(fn.__doc__ or "").strip(),
        default_cpus=meta.get("cpus", 1.0),
        distributed=meta.get("distributed", False),
    )


class StageLookupError(LookupError):
    pass


def resolve_stage(uses: str) -> StageDef:
    """Find the StageDef for `uses`: a built-in name or `package.module:function`."""
    from alignpipe.stages import BUILTINS

    if uses in BUILTINS:
        mod, _, attr = BUILTINS[uses].partition(":")
        return getattr(importlib.import_module(mod), attr or "STAGE")
    if ":" not in uses:
        known = ", ".join(sorted(BUILTINS))
        raise StageLookupError(f"unknown stage type {uses!r}; expected one of: {known}, or 'package.module:function'")
    mod_name, _, fn_name = uses.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise StageLookupError(f"cannot import module {mod_name!r} for stage type {uses!r}: {e}") from None
    except Exception as e:  # the user's module raised while importing: say where, not a traceback
        where = traceback.extract_tb(e.__traceback__)[-1]
        raise StageLookupError(f"module {mod_name!r} (stage type {uses!r}) raised {type(e).__name__}: {e} while "
                               f"importing, at {where.filename}:{where.lineno}; fix the module") from None
    fn = getattr(mod, fn_name, None)
    if fn is None or not callable(fn):
        raise StageLookupError(f"module {mod_name!r} has no function {fn_name!r} (stage type {uses!r})")
    return stage_from_function(uses, fn)
