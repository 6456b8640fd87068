"""User-facing errors. The CLI prints them without a traceback and exits 2."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """Bad input from the user: a spec, a path, an argument. `problems` are full sentences, each naming the
    file, stage and field and saying what is expected."""

    exit_code = 2

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StageFailed(Exception):
    """Raised inside a stage process for a failure that is the data's or the config's fault (no traceback)."""


def pydantic_problems(source: str, prefix: str, err: Any) -> list[str]:
    """One sentence per error of a pydantic ValidationError: 'SOURCE: PREFIX.FIELD: what is wrong (got VALUE)'."""
    out = []
    for e in err.errors():
        where = ".".join(filter(None, [prefix, ".".join(str(x) for x in e["loc"])]))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling"
        elif "input" in e and e["type"] not in ("missing",):
            msg = f"{msg} (got {e['input']!r})"
        out.append(f"{source}: {where}: {msg}")
    return out
