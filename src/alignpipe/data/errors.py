"""Data errors that name the file, the record and the field and say the fix; counting skipped records."""

from __future__ import annotations

from dataclasses import dataclass, field

from alignpipe.pipeline.errors import StageFailed


class DataError(StageFailed, ValueError):
    """A problem with a dataset: `<source>: record <i>, field '<f>': <problem>. Fix: <fix>`.

    A StageFailed: a stage that raises it exits with code 2 and this message, no traceback and no retry."""

    def __init__(  # noqa: PLR0913 — every part of the message is a separate, inspectable attribute
        self, source: str, index: int | None, field: str | None, problem: str, fix: str, reason: str = "invalid"
    ):
        self.source, self.index, self.field, self.problem, self.fix = source, index, field, problem, fix
        self.reason = reason  # short key SkipCounter groups by: missing_field, empty, wrong_type, too_long, ...
        where = ", ".join(x for x in (
            f"record {index}" if index is not None else "",
            f"field {field!r}" if field is not None else "",
        ) if x)
        super().__init__(f"{source}: {where + ': ' if where else ''}{problem}. Fix: {fix}")


@dataclass
class SkipCounter:
    """Counts records examined and skipped (by reason) in one pass; `check()` raises past `max_fraction`.

    Pass one to a parse_* or tokenize_* function to skip bad records instead of raising on the first one;
    use one counter per pass so fractions are per pass. `summary()` goes into the artifact manifest.
    """

    source: str
    max_fraction: float = 0.01
    seen: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first error message

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def count(self) -> None:
        """Count one examined record (kept or not)."""
        self.seen += 1

    def skip(self, error: DataError) -> None:
        """Count one skipped record under `error.reason`."""
        self.counts[error.reason] = self.counts.get(error.reason, 0) + 1
        self.examples.setdefault(error.reason, str(error))

    def check(self) -> None:
        """Raise DataError if more than max_fraction of the examined records were skipped."""
        if self.seen and self.skipped / self.seen > self.max_fraction:
            detail = "; ".join(f"{r}: {n} (first: {self.examples[r]})" for r, n in sorted(self.counts.items()))
            raise DataError(
                self.source, None, None,
                f"{self.skipped} of {self.seen} records skipped ({self.skipped / self.seen:.1%} > "
                f"allowed {self.max_fraction:.1%}) — {detail}",
                "repair the records named above, or raise the allowed skip fraction if they are expected",
            )

    def summary(self) -> dict[str, object]:
        return {"seen": self.seen, "skipped": self.skipped, "by_reason": dict(sorted(self.counts.items()))}
