"""The single-machine engine: read, group, focus row by row, write; resumable."""

from __future__ import annotations

import logging
from pathlib import Path

from ragfocus.batch.inputs import read_records
from ragfocus.batch.job import JobWriter, Work, admit
from ragfocus.batch.options import BatchOptions
from ragfocus.batch.process import Outcome, RowProcessor
from ragfocus.batch.summary import BatchSummary
from ragfocus.focuser import Focuser

logger = logging.getLogger(__name__)


def run_local(
    input_path: str | Path,
    output: str | Path,
    options: BatchOptions,
    *,
    resume: bool = False,
    overwrite: bool = False,
    errors: str | Path | None = None,
    part_rows: int = 100,
    progress: bool = True,
    focuser: Focuser | None = None,
) -> BatchSummary:
    """Focus every row of ``input_path`` into ``output``; see ``docs/batch.md``.

    Rows are taken ``options.batch_size`` at a time, focused (longest first), and written in
    input order once the group is done. ``focuser`` reuses a loaded ``Focuser`` (its own model
    and options win over ``options.model``/``device``/``distraction``).
    """
    writer = JobWriter(input_path, output, engine="local", resume=resume, overwrite=overwrite, errors=errors,
                       part_rows=part_rows, progress=progress)
    try:
        processor = RowProcessor(options, focuser)
        group: list[Work | Outcome] = []
        for item in admit(read_records(input_path), writer.done):
            if item is None:
                writer.skip()
                continue
            group.append(item)
            if sum(isinstance(entry, Work) for entry in group) >= options.batch_size:
                writer.record(_run_group(processor, group, writer))
                group = []
        if group:
            writer.record(_run_group(processor, group, writer))
    finally:
        summary = writer.finish()
    logger.info(summary.describe())
    return summary


def _run_group(processor: RowProcessor, group: list[Work | Outcome], writer: JobWriter) -> list[Outcome]:
    """Outcomes of a group in input order (rows that failed admission keep their place)."""
    work = [entry for entry in group if isinstance(entry, Work)]
    done = iter(processor.process([(entry.line, entry.record) for entry in work], on_row=writer.tick))
    return [next(done) if isinstance(entry, Work) else entry for entry in group]
