"""Where output rows and errors go, written so that a killed job leaves no partial row.

JSONL: one complete line per ``write`` call, flushed at once and fsynced after every group.
A kill can only cut the last line short; ``--resume`` finds it (no newline, or not JSON),
drops it and reports it.

Parquet: OUTPUT is a directory of part files ``part-00000.parquet``, ``part-00001.parquet``...
(readable as one table by pyarrow, pandas, DuckDB, Spark or Ray). Each part is written as
``.part-NNNNN.parquet.tmp``, fsynced and renamed, so a part file is complete or absent; a
kill loses at most the rows buffered for the next part (``part_rows``). ``--resume`` deletes
leftover ``.tmp`` files and reports them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ragfocus.batch.formats import format_of, require_pyarrow

logger = logging.getLogger(__name__)


@dataclass
class ResumeState:
    """What an existing output already holds, and what had to be repaired to read it."""

    done: set[str] = field(default_factory=set)
    repaired: list[str] = field(default_factory=list)


class OutputSink(Protocol):
    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append complete output rows (one group)."""

    def close(self) -> None:
        """Make everything written durable."""


def open_output(path: str | Path, *, resume: bool, overwrite: bool, part_rows: int = 100) -> tuple[OutputSink, ResumeState]:
    """Open OUTPUT for appending; with ``resume``, read the ids it holds (repairing a cut tail).

    Raises:
        FileExistsError: OUTPUT exists and neither ``resume`` nor ``overwrite`` was asked for.
        ValueError: a resumed JSONL output is corrupt before its last line.
    """
    target = Path(path)
    kind = format_of(target)
    if target.exists() and not resume:
        if not overwrite:
            raise FileExistsError(f"{target} exists: pass --resume to skip the ids it holds, or --overwrite to start again")
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    if kind == "jsonl":
        state = _resume_jsonl(target) if target.exists() else ResumeState()
        return JsonlSink(target), state
    require_pyarrow()
    state = _resume_parquet(target) if target.exists() else ResumeState()
    return ParquetSink(target, part_rows=part_rows), state


def errors_path(output: str | Path) -> Path:
    """Default errors file: ``out.jsonl`` -> ``out.errors.jsonl``, ``out.parquet`` -> ``out.errors.jsonl``."""
    target = Path(output)
    return target.with_name(target.stem + ".errors.jsonl")


class JsonlSink:
    """Appends output rows as JSON lines (strict JSON: non-finite numbers are already ``None``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = path.open("ab")

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self._handle.write(_line(row))
            self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()


class ErrorSink(JsonlSink):
    """The errors file: rewritten by every run (a resumed run retries the rows that failed)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        super().__init__(path)


def _line(row: dict[str, Any]) -> bytes:
    return (json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def _resume_jsonl(path: Path) -> ResumeState:
    state = ResumeState()
    data = path.read_bytes()
    keep = len(data)
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        state.repaired.append(f"dropped a truncated last line ({len(data) - keep} bytes) of {path}")
    lines = data[:keep].splitlines(keepends=True)
    for number, raw in enumerate(lines, start=1):
        try:
            state.done.add(str(json.loads(raw)["id"]))
        except (ValueError, KeyError, TypeError):
            if number != len(lines):
                raise ValueError(f"{path} line {number} is not an output row; it was not written by ragfocus batch, "
                                 "or was changed since: fix or remove it, or pass --overwrite") from None
            keep -= len(raw)
            state.repaired.append(f"dropped an unreadable last line ({len(raw)} bytes) of {path}")
    if keep != len(data):
        with path.open("r+b") as handle:
            handle.truncate(keep)
            os.fsync(handle.fileno())
    for message in state.repaired:
        logger.warning(message)
    return state


def _resume_parquet(directory: Path) -> ResumeState:
    import pyarrow.parquet as pq

    state = ResumeState()
    for leftover in sorted(directory.glob(".part-*.tmp")):
        leftover.unlink()
        state.repaired.append(f"deleted an unfinished part file {leftover}")
    for part in sorted(directory.glob("part-*.parquet")):
        state.done.update(str(value) for value in pq.read_table(part, columns=["id"]).column("id").to_pylist())
    for message in state.repaired:
        logger.warning(message)
    return state


class ParquetSink:
    """Buffers rows and writes them as atomic part files of ``part_rows`` rows (the rest on close)."""

    def __init__(self, directory: Path, *, part_rows: int) -> None:
        if part_rows < 1:
            raise ValueError(f"part_rows must be positive, got {part_rows}")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.part_rows = part_rows
        self._buffer: list[dict[str, Any]] = []
        numbers = [int(part.name[5:10]) for part in directory.glob("part-*.parquet")]
        self._next = max(numbers, default=-1) + 1

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        self._buffer.extend(rows)
        while len(self._buffer) >= self.part_rows:
            self._write_part(self._buffer[: self.part_rows])
            del self._buffer[: self.part_rows]

    def close(self) -> None:
        if self._buffer:
            self._write_part(self._buffer)
            self._buffer = []

    def _write_part(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ragfocus.batch.parquet_schema import OUTPUT_SCHEMA, to_parquet_row

        name = f"part-{self._next:05d}.parquet"
        temporary = self.directory / f".{name}.tmp"
        table = pa.Table.from_pylist([to_parquet_row(row) for row in rows], schema=OUTPUT_SCHEMA)
        pq.write_table(table, temporary)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, self.directory / name)
        _fsync_directory(self.directory)
        self._next += 1


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_output(path: str | Path) -> list[dict[str, Any]]:
    """Every row of an output (JSONL file or Parquet directory) as the JSONL dicts, in file order."""
    target = Path(path)
    if format_of(target) == "jsonl":
        with target.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    import pyarrow.parquet as pq

    from ragfocus.batch.parquet_schema import from_parquet_row

    rows: list[dict[str, Any]] = []
    for part in sorted(target.glob("part-*.parquet")):
        rows.extend(from_parquet_row(row) for row in pq.read_table(part).to_pylist())
    return rows
