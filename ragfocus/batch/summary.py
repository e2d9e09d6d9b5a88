"""``BatchSummary``: what a batch job did, and the exit status that says it."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_USAGE = 2
"""Bad arguments, an unreadable input, or an output that exists without --resume/--overwrite."""
EXIT_ROWS_FAILED = 3
"""The job ran to the end but some rows failed (they are in the errors file)."""


@dataclass(frozen=True)
class BatchSummary:
    """Counts of one run. ``skipped`` rows were already in the output (``--resume``)."""

    succeeded: int
    failed: int
    skipped: int
    seconds: float
    output: str
    errors: str
    engine: str
    repaired: tuple[str, ...] = ()
    """What resuming had to repair (a truncated last line, an unfinished part file)."""

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed

    @property
    def rows_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.failed == 0 else EXIT_ROWS_FAILED

    def describe(self) -> str:
        """One line for people, e.g. ``batch (local): 98 succeeded, 2 failed (see out.errors.jsonl), ...``."""
        failed = f"{self.failed} failed" + (f" (see {self.errors})" if self.failed else "")
        head = (
            f"batch ({self.engine}): {self.succeeded} succeeded, {failed}, {self.skipped} skipped (already in {self.output}); "
            f"{self.processed} rows in {self.seconds:.1f} s ({self.rows_per_second:.3f} rows/s)"
        )
        lines = [head]
        lines += [f"resume: {message}" for message in self.repaired]
        return "\n".join(lines)
