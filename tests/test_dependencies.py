"""Every package alignpipe imports is one it declares, and the start-up path imports only the core's.

A fresh install from the lock gets exactly what pyproject.toml declares; an undeclared import works only on a
machine that happens to have the package (typer 0.29 stopped bringing click, and `import click` broke every usage
error on fresh machines). These tests read the imports from the source itself.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import json
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "alignpipe"


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def req_name(req: str) -> str:
    return norm(re.split(r"[\s\[<>=!~;(]", req.strip(), maxsplit=1)[0])


def declared() -> tuple[set[str], set[str]]:
    """(core dependencies, core + every extra), as normalized distribution names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {req_name(r) for r in project["dependencies"]}
    extras = {req_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    return core, core | extras - {"alignpipe"}


def closure(names: set[str]) -> set[str]:
    """The distributions `names` pull in (their unconditional requirements, transitively)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo.extend(req_name(r) for r in reqs if "extra ==" not in r)
    return seen


def third_party_imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods.add(node.module.split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m != "alignpipe" and m != "__future__"}


@functools.cache
def _packages() -> dict[str, list[str]]:
    return md.packages_distributions()  # a scan of every installed distribution: once


def distributions(module: str) -> set[str]:
    return {norm(d) for d in _packages().get(module, [])}


def test_every_imported_package_is_declared_directly():
    """Declared by name, not merely pulled in by another package (which may stop pulling it in)."""
    _, everything = declared()
    missing = {}
    for path in sorted(SRC.rglob("*.py")):
        for module in third_party_imports(path):
            if not distributions(module) & everything:
                missing.setdefault(module, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_the_cli_and_every_stage_definition_load_with_the_core_dependencies_only():
    """`alignpipe --help`, validation and a no-op rerun import the CLI, the API and every stage module: what they
    load must come with the core install (`pip install alignpipe`), not with an extra."""
    code = ("import json, sys; before = set(sys.modules); import alignpipe.cli, alignpipe.api; "
            "from alignpipe.stages import BUILTINS; from alignpipe.pipeline.stagedef import resolve_stage; "
            "[resolve_stage(n) for n in BUILTINS]; "
            "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout)
    core, _ = declared()
    allowed = closure(core)
    extra = {m: sorted(distributions(m)) for m in loaded if m not in sys.stdlib_module_names and m != "alignpipe"
             and distributions(m) and not distributions(m) & allowed}
    assert not extra, f"loaded at start-up from packages outside the core dependencies: {extra}"
