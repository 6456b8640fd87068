"""User-facing errors. The CLI prints them without a traceback and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a spec, a path, an argument. `problems` are full sentences, each naming the
    file, stage and field and saying what is expected."""

    exit_code = 2

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StageFailed(Exception):
    """Raised inside a stage process for a failure that is the data's or the config's fault (no traceback)."""
