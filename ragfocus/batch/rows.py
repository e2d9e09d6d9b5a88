"""One batch row in (``BatchRow``, checked) and out (a JSON-able dict of the ``FocusResult``).

An input row is a JSON object (or Parquet row)::

    {"id": "q1", "query": "Who wrote Hamlet?", "passages": ["...", {"id": "p2", "text": "...",
     "metadata": {...}, "score": 0.8}], "metadata": {...}}
    {"id": "q2", "query": "...", "corpus": "path/to/index_dir", "k": 10}

``id`` is a str or int (written back as a str); ``metadata`` of the row and of every passage is
carried into the output untouched. Other fields are ignored.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ragfocus.types import FocusResult, Passage, ScoredPassage


class RowError(ValueError):
    """A row the job cannot take; ``kind`` names the stage (json, schema, duplicate, retrieval, focus)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class BatchRow:
    """A checked input row. Exactly one of ``passages`` and ``corpus`` is set."""

    line: int
    id: str
    query: str
    passages: tuple[Passage, ...] | None
    corpus: str | None = None
    k: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


def row_id(record: Mapping[str, Any]) -> str:
    """The row's id as a str.

    Raises:
        RowError: no ``id``, or one that is not a str or int.
    """
    if "id" not in record or record["id"] is None:
        raise RowError("schema", "missing field 'id'")
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or (isinstance(value, str) and not value):
        raise RowError("schema", f"'id' must be a non-empty str or an int, got {value!r}")
    return str(value)


def parse_row(record: Mapping[str, Any], line: int, *, default_index: str | None = None) -> BatchRow:
    """Check ``record`` (never modified) and return it as a ``BatchRow``.

    Raises:
        RowError: naming the field that is missing or of the wrong type.
    """
    identifier = row_id(record)
    query = record.get("query")
    if not isinstance(query, str) or not query.strip():
        raise RowError("schema", "'query' must be a non-empty str" if "query" in record else "missing field 'query'")
    metadata = _mapping(record.get("metadata"), "'metadata'")
    passages = record.get("passages")
    if passages is not None:
        if isinstance(passages, (str, bytes)) or not isinstance(passages, (list, tuple)):
            raise RowError("schema", f"'passages' must be a list, got {type(passages).__name__}")
        items = tuple(_passage(item, position) for position, item in enumerate(passages))
        return BatchRow(line, identifier, query, items, metadata=metadata)
    corpus = record.get("corpus", default_index)
    if corpus is None:
        raise RowError("schema", "the row has neither 'passages' nor 'corpus' (and no --index default was given)")
    if not isinstance(corpus, str):
        raise RowError("schema", f"'corpus' must be the path of an index directory, got {type(corpus).__name__}")
    k = record.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise RowError("schema", f"'k' must be a positive int, got {k!r}")
    return BatchRow(line, identifier, query, None, corpus=corpus, k=k, metadata=metadata)


def _passage(item: Any, position: int) -> Passage:
    if isinstance(item, str):
        return Passage(text=item)
    if not isinstance(item, Mapping):
        raise RowError("schema", f"passages[{position}] must be a str or an object with 'text', got {type(item).__name__}")
    text = item.get("text")
    if not isinstance(text, str):
        raise RowError("schema", f"passages[{position}].text must be a str, got {type(text).__name__}")
    identifier = item.get("id")
    if identifier is not None and (isinstance(identifier, bool) or not isinstance(identifier, (str, int))):
        raise RowError("schema", f"passages[{position}].id must be a str or an int, got {identifier!r}")
    score = item.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        raise RowError("schema", f"passages[{position}].score must be a number, got {score!r}")
    metadata = _mapping(item.get("metadata"), f"passages[{position}].metadata")
    return Passage(
        text=text, id=None if identifier is None else str(identifier), metadata=metadata,
        score=None if score is None else float(score),
    )


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RowError("schema", f"{what} must be an object, got {type(value).__name__}")
    return copy.deepcopy(dict(value))


def output_row(row: BatchRow, result: FocusResult, *, granularity: str, timings: Mapping[str, float]) -> dict[str, Any]:
    """The output row of a focused ``row``: JSON-able, non-finite numbers as ``None``.

    Kept passages carry their (possibly sentence-pruned) ``text``; dropped ones only their
    ``id``, ``index``, ``rank``, ``score``, ``signals`` and ``metadata``.
    """
    return {
        "id": row.id,
        "query": row.query,
        "context": result.context,
        "kept": [_scored(passage, with_text=True) for passage in result.kept],
        "dropped": [_scored(passage, with_text=False) for passage in result.dropped],
        "tokens_in": result.tokens_in,
        "tokens_out": result.tokens_out,
        "budget": result.budget,
        "order": result.order,
        "granularity": granularity,
        "metadata": copy.deepcopy(dict(row.metadata)),
        "timings": {name: round(float(value), 6) for name, value in timings.items()},
    }


def _scored(passage: ScoredPassage, *, with_text: bool) -> dict[str, Any]:
    return {
        "id": passage.id,
        "index": passage.index,
        "rank": passage.rank,
        "score": _finite(passage.score),
        "text": passage.text if with_text else None,
        "signals": {name: _finite(value) for name, value in passage.signals.items()},
        "metadata": copy.deepcopy(dict(passage.metadata)),
    }


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def error_row(line: int, identifier: str | None, kind: str, reason: str) -> dict[str, Any]:
    """A line of the errors file."""
    return {"line": line, "id": identifier, "kind": kind, "reason": reason}
