"""Batch preprocessing of document sets: ``ragfocus batch`` and ``ragfocus index``.

>>> from ragfocus.batch import BatchOptions, run_local                      # doctest: +SKIP
>>> summary = run_local("questions.jsonl", "focused.jsonl", BatchOptions(budget=300))
>>> summary.succeeded, summary.failed, summary.exit_code
(998, 2, 3)

``run_ray`` runs the same job through Ray Data (``pip install 'ragfocus[ray]'``).
See ``docs/batch.md`` for formats, resume and atomicity, the errors file and exit codes.
"""

from __future__ import annotations

from ragfocus.batch.index import CorpusIndex, IndexInfo, build_index
from ragfocus.batch.local import run_local
from ragfocus.batch.options import BatchOptions
from ragfocus.batch.ray_engine import run_ray
from ragfocus.batch.sinks import read_output
from ragfocus.batch.summary import EXIT_OK, EXIT_ROWS_FAILED, EXIT_USAGE, BatchSummary

__all__ = [
    "EXIT_OK",
    "EXIT_ROWS_FAILED",
    "EXIT_USAGE",
    "BatchOptions",
    "BatchSummary",
    "CorpusIndex",
    "IndexInfo",
    "build_index",
    "read_output",
    "run_local",
    "run_ray",
]
