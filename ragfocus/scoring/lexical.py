"""The cheap lexical signal: Okapi BM25 of the query over the given passages only.

Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond" (2009), through
``rank-bm25`` with its defaults (k1=1.5, b=0.75); idf comes from the passages of the query
themselves, so it needs no corpus.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens."""
    return _WORD.findall(text.lower())


def bm25_scores(query: str, passages: Sequence[str]) -> list[float]:
    """Okapi BM25 (rank-bm25 defaults) of ``query`` against the given passages only."""
    from rank_bm25 import BM25Okapi

    if not passages:
        return []
    corpus = [words(text) or ["<empty>"] for text in passages]
    return [float(score) for score in BM25Okapi(corpus).get_scores(words(query))]
