"""``RowProcessor``: focus a group of rows with one ``Focuser``; shared by both engines.

A group is retrieved together (one embedding call per index), then focused together with one
``Focuser.focus_many`` call: the rows' prompts run through the model as padded, length-sorted
batches of ``--batch-size`` (a row past one prompt is windowed and scored on its own). A row
that fails gets its own error; the others go on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ragfocus.batch.index import CorpusIndex
from ragfocus.batch.options import BatchOptions
from ragfocus.batch.rows import BatchRow, RowError, error_row, output_row, parse_row
from ragfocus.focuser import Focuser
from ragfocus.types import FocusResult, Passage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """The result of one input row: ``row`` (an output row) or ``error`` (an errors-file line)."""

    line: int
    id: str | None
    row: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @classmethod
    def failed(cls, line: int, identifier: str | None, kind: str, reason: str) -> Outcome:
        return cls(line, identifier, error=error_row(line, identifier, kind, reason))


def make_focuser(options: BatchOptions) -> Focuser:
    """The ``Focuser`` of a job (model and device from ``options``)."""
    return Focuser(options.model, device=options.device, distraction=options.distraction)


class RowProcessor:
    """Turns admitted input records into ``Outcome``s; loads each index once."""

    def __init__(self, options: BatchOptions, focuser: Focuser | None = None) -> None:
        self.options = options
        self._focuser = focuser
        self._indexes: dict[str, CorpusIndex] = {}

    @property
    def focuser(self) -> Focuser:
        """The given ``Focuser``, or one made from ``options`` when the first row needs it."""
        if self._focuser is None:
            self._focuser = make_focuser(self.options)
        return self._focuser

    def process(
        self, records: Sequence[tuple[int, dict[str, Any]]], *, on_row: Callable[[], None] | None = None
    ) -> list[Outcome]:
        """``(line, record)`` pairs in, one ``Outcome`` each out, in the same order; ``on_row`` is
        called after each row is focused (for a progress bar)."""
        outcomes: dict[int, Outcome] = {}
        rows: list[BatchRow] = []
        for position, (line, record) in enumerate(records):
            try:
                rows.append(parse_row(record, line, default_index=self.options.index))
            except RowError as error:
                outcomes[position] = Outcome.failed(line, _id_or_none(record), error.kind, error.reason)
        positions = {line: position for position, (line, _) in enumerate(records)}  # lines are unique in a job
        passages, retrieve_s = self._retrieve(rows, outcomes, positions)
        ready = [row for row in rows if row.line in passages]
        if ready:
            started = time.perf_counter()
            try:
                results: list[Any] = self.focuser.focus_many(
                    [(row.query, passages[row.line]) for row in ready], **self.options.focus_options(),
                    batch_size=self.options.batch_size, errors="return",
                )
            except Exception as error:  # noqa: BLE001 - e.g. the model cannot load: every row says why
                results = [error] * len(ready)
            focus_s = (time.perf_counter() - started) / len(ready)
            for row, result in zip(ready, results):
                outcomes[positions[row.line]] = self._outcome(row, result, retrieve_s.get(row.line, 0.0), focus_s)
                if on_row is not None:
                    on_row()
        return [outcomes[position] for position in range(len(records))]

    def _retrieve(
        self, rows: list[BatchRow], outcomes: dict[int, Outcome], positions: dict[int, int]
    ) -> tuple[dict[int, Sequence[Passage]], dict[int, float]]:
        passages: dict[int, Sequence[Passage]] = {row.line: row.passages for row in rows if row.passages is not None}
        seconds: dict[int, float] = {}
        by_corpus: dict[str, list[BatchRow]] = {}
        for row in rows:
            if row.passages is None:
                by_corpus.setdefault(str(row.corpus), []).append(row)
        for corpus, group in by_corpus.items():
            started = time.perf_counter()
            try:
                index = self._index(corpus)
                found = index.search_many([row.query for row in group], [row.k or self.options.k for row in group])
            except Exception as error:  # noqa: BLE001 - a bad index fails its rows, not the job
                for row in group:
                    outcomes[positions[row.line]] = Outcome.failed(row.line, row.id, "retrieval", f"{type(error).__name__}: {error}")
                continue
            share = (time.perf_counter() - started) / len(group)
            for row, retrieved in zip(group, found):
                passages[row.line] = retrieved
                seconds[row.line] = share
        return passages, seconds

    def _index(self, corpus: str) -> CorpusIndex:
        if corpus not in self._indexes:
            self._indexes[corpus] = CorpusIndex(corpus)
        return self._indexes[corpus]

    def _outcome(self, row: BatchRow, result: FocusResult | Exception, retrieve_s: float, focus_s: float) -> Outcome:
        if isinstance(result, Exception):
            logger.info("row %s (line %d) failed: %s", row.id, row.line, result)
            return Outcome.failed(row.line, row.id, "focus", f"{type(result).__name__}: {result}")
        timings = {"retrieve_s": retrieve_s, "focus_s": focus_s, "total_s": retrieve_s + focus_s}
        written = output_row(row, result, granularity=self.options.granularity, timings=timings)
        try:
            json.dumps(written, allow_nan=False)
        except (TypeError, ValueError) as error:
            return Outcome.failed(row.line, row.id, "schema", f"the row's metadata is not JSON-serializable: {error}")
        return Outcome(row.line, row.id, row=written)


def _id_or_none(record: dict[str, Any]) -> str | None:
    value = record.get("id")
    return None if value is None else str(value)
