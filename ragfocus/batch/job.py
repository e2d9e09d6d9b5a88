"""What both engines share: admitting input rows (resume, duplicates, unreadable lines) and
writing outcomes (output sink, errors file, counts, progress bar)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragfocus.batch.inputs import InputRecord, count_rows
from ragfocus.batch.process import Outcome
from ragfocus.batch.rows import RowError, row_id
from ragfocus.batch.sinks import ErrorSink, errors_path, open_output
from ragfocus.batch.summary import BatchSummary


@dataclass(frozen=True)
class Work:
    """An input row to focus: its line and record (never modified)."""

    line: int
    record: dict[str, Any]


def admit(records: Iterable[InputRecord], done: set[str]) -> Iterator[Work | Outcome | None]:
    """Each input row as ``Work``, as a failed ``Outcome`` (unreadable, no id, repeated id), or
    ``None`` when its id is already in the output."""
    seen: set[str] = set()
    for item in records:
        if item.record is None:
            yield Outcome.failed(item.line, None, "json", item.error or "unreadable line")
            continue
        try:
            identifier = row_id(item.record)
        except RowError as error:
            yield Outcome.failed(item.line, None, error.kind, error.reason)
            continue
        if identifier in seen:
            yield Outcome.failed(item.line, identifier, "duplicate", f"id {identifier!r} appeared on an earlier line")
            continue
        seen.add(identifier)
        yield None if identifier in done else Work(item.line, item.record)


class JobWriter:
    """Opens OUTPUT (resuming or not) and the errors file; records outcomes; counts and shows progress."""

    def __init__(
        self,
        input_path: str | Path,
        output: str | Path,
        *,
        engine: str,
        resume: bool = False,
        overwrite: bool = False,
        errors: str | Path | None = None,
        part_rows: int = 100,
        progress: bool = True,
    ) -> None:
        self.started = time.perf_counter()
        total = count_rows(input_path)  # an unreadable input fails here, before OUTPUT is touched
        self.output = str(output)
        self.engine = engine
        self.sink, self.state = open_output(output, resume=resume, overwrite=overwrite, part_rows=part_rows)
        self.errors_path = Path(errors) if errors is not None else errors_path(output)
        self.errors = ErrorSink(self.errors_path)
        self.succeeded = self.failed = self.skipped = 0
        self._bar = _progress(total, progress)
        self._ticked = 0

    @property
    def done(self) -> set[str]:
        """Ids already in the output when the job started."""
        return self.state.done

    def skip(self) -> None:
        self.skipped += 1
        self._bar.update(1)

    def tick(self) -> None:
        """One row of the current group is done (the bar moves before the group is written)."""
        self._ticked += 1
        self._bar.update(1)

    def record(self, outcomes: list[Outcome]) -> None:
        """Write a group of outcomes (output rows in the given order) and advance the bar."""
        rows = [outcome.row for outcome in outcomes if outcome.row is not None]
        failures = [outcome.error for outcome in outcomes if outcome.error is not None]
        if rows:
            self.sink.write(rows)
        if failures:
            self.errors.write(failures)
        self.succeeded += len(rows)
        self.failed += len(failures)
        self._bar.update(max(0, len(outcomes) - self._ticked))
        self._ticked = 0
        self._bar.set_postfix(failed=self.failed, skipped=self.skipped, refresh=False)

    def finish(self) -> BatchSummary:
        """Close everything (durably) and count."""
        self.sink.close()
        self.errors.close()
        self._bar.close()
        return BatchSummary(
            succeeded=self.succeeded, failed=self.failed, skipped=self.skipped, seconds=time.perf_counter() - self.started,
            output=self.output, errors=str(self.errors_path), engine=self.engine, repaired=tuple(self.state.repaired),
        )


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="row", desc="ragfocus batch", file=sys.stderr, disable=not enabled, dynamic_ncols=True)
