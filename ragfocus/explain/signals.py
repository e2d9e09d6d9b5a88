"""What each signal means, and how a signal's values become bar lengths: shared by the HTML
report and the terminal view."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from ragfocus.types import ScoredPassage

SIGNAL_HELP: dict[str, str] = {
    "retrieval_heads": "calibrated attention of the retrieval heads (query minus N/A, per token)",
    "query_attention": "attention from the query's tokens, per token",
    "null_attention": "attention from the content-free query N/A, per token",
    "learned_heads": "weighted, z-scored calibrated attention of many heads (fusion profile)",
    "attention_sort": "attention of the answer's first decoding step (attention sorting)",
    "distraction": "distracting effect: 1 - P(abstain | query, passage alone)",
    "abstain_logprob": "log-probability of abstaining given the passage alone",
    "bm25": "BM25 over the given passages",
    "retriever": "the retriever's own score",
}


def signal_names(passages: Iterable[ScoredPassage]) -> list[str]:
    """Every signal of ``passages``, in order of first appearance."""
    names: dict[str, None] = {}
    for passage in passages:
        names.update(dict.fromkeys(passage.signals))
    return list(names)


def fractions(values: Sequence[float]) -> list[float | None]:
    """Min-max position of each value among the finite ones, in [0, 1] (0.5 when they are all
    equal); ``None`` for a missing (NaN or infinite) value."""
    finite = [value for value in values if math.isfinite(value)]
    if not finite:
        return [None] * len(values)
    low, high = min(finite), max(finite)
    return [
        None if not math.isfinite(value) else (0.5 if high == low else (value - low) / (high - low))
        for value in values
    ]


def number(value: float, *, digits: int = 4) -> str:
    """A compact display of a signal value: ``digits`` significant digits, signed; "n/a" when missing."""
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "-inf" if value < 0 else "+inf"
    return f"{value:+.{digits}g}"
