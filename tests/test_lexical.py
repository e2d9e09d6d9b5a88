"""BM25 computed with counters equals rank-bm25's BM25Okapi on real passages and odd inputs."""

from __future__ import annotations

import pytest
from rank_bm25 import BM25Okapi

from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.scoring.lexical import bm25_scores, words


def _reference(query: str, passages: list[str]) -> list[float]:
    corpus = [words(text) or ["<empty>"] for text in passages]
    return [float(score) for score in BM25Okapi(corpus).get_scores(words(query))]


def test_bm25_equals_rank_bm25_on_hotpotqa_dev() -> None:
    for question in hotpotqa(100, 30):
        assert bm25_scores(question.question, question.paragraphs) == pytest.approx(
            _reference(question.question, question.paragraphs), rel=1e-12, abs=1e-12
        )


@pytest.mark.parametrize(
    ("query", "passages"),
    [
        ("the river the river", ["the river Nile", "the river", "the the the", ""]),  # repeated words, negative idf
        ("absent words", ["one passage", "another passage"]),
        ("x", ["x"]),
        ("Paris?", ["", "", "Paris!"]),
    ],
)
def test_bm25_equals_rank_bm25_on_odd_inputs(query: str, passages: list[str]) -> None:
    assert bm25_scores(query, passages) == pytest.approx(_reference(query, passages), rel=1e-12, abs=1e-12)


def test_bm25_of_no_passages_is_empty() -> None:
    assert bm25_scores("query", []) == []
