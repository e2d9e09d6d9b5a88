"""The cheap lexical signal: Okapi BM25 of the query over the given passages only.

Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond" (2009), with
``rank-bm25``'s ``BM25Okapi`` defaults and rules (k1=1.5, b=0.75; an idf below zero is floored at
epsilon=0.25 times the average idf of every word in the passages); idf comes from the passages of
the query themselves, so it needs no corpus. Computed here with counters rather than through
``rank-bm25`` (the same scores up to floating-point rounding, tested against it) because it runs
once per query on the host, next to a batched GPU pass.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"\w+")

K1 = 1.5
B = 0.75
EPSILON = 0.25


def words(text: str) -> list[str]:
    """Lower-cased word tokens."""
    return _WORD.findall(text.lower())


def bm25_scores(query: str, passages: Sequence[str]) -> list[float]:
    """Okapi BM25 (``rank-bm25``'s ``BM25Okapi`` with its defaults) of ``query`` against the
    given passages only."""
    if not passages:
        return []
    tokens = [words(text) or ["<empty>"] for text in passages]
    documents = [Counter(document) for document in tokens]
    lengths = [len(document) for document in tokens]
    count = len(documents)
    average_length = sum(lengths) / count
    frequency: Counter[str] = Counter()
    for document in documents:
        frequency.update(document.keys())  # counted in C: one per passage holding the word

    def idf(documents_with_word: int) -> float:
        return math.log(count - documents_with_word + 0.5) - math.log(documents_with_word + 0.5)

    # The average idf over every distinct word, grouped by how many passages hold the word.
    average_idf = sum(words_ * idf(held) for held, words_ in Counter(frequency.values()).items()) / len(frequency)
    scores = [0.0] * count
    for word in words(query):
        held = frequency.get(word)
        if not held:
            continue
        weight = idf(held)
        if weight < 0:
            weight = EPSILON * average_idf
        for position, document in enumerate(documents):
            term = document.get(word)
            if term:
                norm = K1 * (1 - B + B * lengths[position] / average_length)
                scores[position] += weight * term * (K1 + 1) / (term + norm)
    return scores
