"""Read the rows of a batch input (JSONL or Parquet) one at a time, with their line numbers.

A JSONL line that is not a JSON object is not an exception here: it comes back as an
``InputRecord`` with ``error`` set, so the job writes it to the errors file and goes on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragfocus.batch.formats import format_of, require_pyarrow


@dataclass(frozen=True)
class InputRecord:
    """One input row: ``line`` is 1-based (the JSONL line, or the Parquet row number)."""

    line: int
    record: dict[str, Any] | None
    error: str | None = None


def read_records(path: str | Path, *, chunk_rows: int = 1024) -> Iterator[InputRecord]:
    """Every row of ``path`` in file order; Parquet is read ``chunk_rows`` rows at a time."""
    if format_of(path) == "parquet":
        yield from _parquet_records(Path(path), chunk_rows)
    else:
        yield from _jsonl_records(Path(path))


def count_rows(path: str | Path) -> int:
    """Rows in ``path`` (non-blank lines of JSONL; Parquet from its footer), for the progress bar."""
    if format_of(path) == "parquet":
        require_pyarrow()
        import pyarrow.dataset as ds

        return int(ds.dataset(str(path), format="parquet").count_rows())
    with Path(path).open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def _jsonl_records(path: Path) -> Iterator[InputRecord]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                yield InputRecord(number, None, f"not valid JSON: {error}")
                continue
            if not isinstance(value, dict):
                yield InputRecord(number, None, f"expected a JSON object, got {type(value).__name__}")
                continue
            yield InputRecord(number, value)


def _parquet_records(path: Path, chunk_rows: int) -> Iterator[InputRecord]:
    require_pyarrow()
    import pyarrow.dataset as ds

    number = 0
    for batch in ds.dataset(str(path), format="parquet").to_batches(batch_size=chunk_rows):
        for row in batch.to_pylist():
            number += 1
            yield InputRecord(number, row)
