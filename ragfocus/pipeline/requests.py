"""The prepare stage's first step: check each ``(query, passages)`` request and find the
distinct non-empty texts the model reads (a duplicate passage is scored once)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ragfocus.passages import PassageLike, as_passages
from ragfocus.types import Passage

Errors = Literal["raise", "return"]
"""What a batch does with a bad request: raise its error, or return it in the request's place."""


@dataclass(frozen=True)
class DistinctTexts:
    """The distinct non-empty texts of a passage list."""

    texts: list[str]
    retriever: list[float | None]
    """Per text, the best retriever score among its copies (what the fusion reads)."""
    slot_of: dict[int, int]
    """Passage index -> index into ``texts``; empty passages are absent."""


@dataclass(frozen=True)
class Request:
    """One checked request: the query, its passages as ``Passage``, and their distinct texts."""

    query: str
    items: list[Passage]
    distinct: DistinctTexts


def check_query(query: object) -> None:
    """Raise ``TypeError``/``ValueError`` naming what is wrong with ``query``."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query is empty: ranking needs a question or search query")


def distinct_texts(items: Sequence[Passage]) -> DistinctTexts:
    """Each distinct non-empty text once, in first-seen order."""
    distinct: dict[str, int] = {}
    best_retriever: list[float | None] = []
    slot_of: dict[int, int] = {}
    for index, item in enumerate(items):
        if not item.text.strip():
            continue
        slot = slot_of[index] = distinct.setdefault(item.text, len(distinct))
        if slot == len(best_retriever):
            best_retriever.append(item.score)
        elif item.score is not None:
            known = best_retriever[slot]
            best_retriever[slot] = item.score if known is None else max(known, item.score)
    return DistinctTexts(list(distinct), best_retriever, slot_of)


def make_request(query: object, passages: Sequence[PassageLike]) -> Request:
    """A checked ``Request``; ``TypeError``/``ValueError`` name what was wrong."""
    check_query(query)
    items = as_passages(passages)
    return Request(query, items, distinct_texts(items))  # type: ignore[arg-type]


def parse_requests(
    requests: Sequence[tuple[str, Sequence[PassageLike]]], errors: Errors
) -> list[Request | Exception]:
    """Each request checked; a bad one raises (``errors="raise"``) or is returned as its
    exception in its place (``errors="return"``)."""
    if errors not in ("raise", "return"):
        raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
    parsed: list[Request | Exception] = []
    for number, request in enumerate(requests):
        try:
            if not isinstance(request, tuple) or len(request) != 2:
                raise TypeError(f"request {number} must be a (query, passages) pair, got {type(request).__name__}")
            parsed.append(make_request(*request))
        except (TypeError, ValueError) as error:
            if errors == "raise":
                raise
            parsed.append(error)
    return parsed
