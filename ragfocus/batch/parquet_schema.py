"""The Arrow schema of Parquet output rows.

Same fields as a JSONL output row, with two changes so that every part has one schema:
``metadata`` (of the row and of each passage) is a JSON string, since its shape differs between
rows, and ``signals`` is a ``map<string, double>``.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

PASSAGE = pa.struct([
    ("id", pa.string()),
    ("index", pa.int64()),
    ("rank", pa.int64()),
    ("score", pa.float64()),
    ("text", pa.string()),
    ("signals", pa.map_(pa.string(), pa.float64())),
    ("metadata", pa.string()),
])
OUTPUT_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("query", pa.string()),
    ("context", pa.string()),
    ("kept", pa.list_(PASSAGE)),
    ("dropped", pa.list_(PASSAGE)),
    ("tokens_in", pa.int64()),
    ("tokens_out", pa.int64()),
    ("budget", pa.int64()),
    ("order", pa.string()),
    ("granularity", pa.string()),
    ("metadata", pa.string()),
    ("timings", pa.map_(pa.string(), pa.float64())),
])


def to_parquet_row(row: dict[str, Any]) -> dict[str, Any]:
    """A JSONL output row in the Parquet schema's shape (the row itself is not modified)."""
    converted = dict(row)
    converted["metadata"] = json.dumps(row["metadata"], ensure_ascii=False)
    converted["timings"] = list(row["timings"].items())
    for key in ("kept", "dropped"):
        converted[key] = [
            {**passage, "signals": list(passage["signals"].items()), "metadata": json.dumps(passage["metadata"], ensure_ascii=False)}
            for passage in row[key]
        ]
    return converted


def from_parquet_row(row: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``to_parquet_row``."""
    converted = dict(row)
    converted["metadata"] = json.loads(row["metadata"])
    converted["timings"] = dict(row["timings"])
    for key in ("kept", "dropped"):
        converted[key] = [
            {**passage, "signals": dict(passage["signals"]), "metadata": json.loads(passage["metadata"])}
            for passage in row[key]
        ]
    return converted
