"""LongLLMLingua peer ranker: llmlingua's own ranking path on the real default model, offline.

Scoring is one forward pass per paragraph (about 11k tokens for the 8 questions), so this module
takes about a minute on two shared CPU cores; it carries the ``slow`` marker.
"""

from __future__ import annotations

import math
import socket
import sys
from collections.abc import Iterator

import pytest

from ragfocus import LoadedModel
from ragfocus.evaluation import peers
from ragfocus.evaluation.datasets import HotpotQuestion, hotpotqa

pytest.importorskip("llmlingua")
pytestmark = pytest.mark.slow


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("LongLLMLingua ranking tried to use the network")


@pytest.fixture(scope="module")
def questions() -> list[HotpotQuestion]:
    return hotpotqa(2000, 8)


@pytest.fixture(scope="module")
def scored(default_model: LoadedModel, questions: list[HotpotQuestion]) -> Iterator[list[list[float]]]:
    """Scores of the 8 questions, with the ranker built and run while sockets are refused."""
    padding_side = default_model.tokenizer.padding_side
    peers._RANKERS.pop(id(default_model), None)  # build it here, under the network block
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _no_network)
        patch.setattr(socket, "getaddrinfo", _no_network)
        result = [peers.longllmlingua_scores(default_model, q.question, q.paragraphs) for q in questions]
    assert default_model.tokenizer.padding_side == padding_side
    yield result


def test_one_finite_float_per_passage(scored: list[list[float]], questions: list[HotpotQuestion]) -> None:
    for scores, question in zip(scored, questions):
        assert len(scores) == len(question.paragraphs)
        assert all(isinstance(value, float) and math.isfinite(value) for value in scores)
        assert len(set(scores)) == len(scores)  # real perplexities, no ties


def test_deterministic_and_cached(
    default_model: LoadedModel, scored: list[list[float]], questions: list[HotpotQuestion]
) -> None:
    ranker = peers._RANKERS[id(default_model)]
    question = questions[0]
    # Each paragraph is scored on its own, so a second call on three of them must repeat their scores.
    again = peers.longllmlingua_scores(default_model, question.question, question.paragraphs[:3])
    assert again == scored[0][:3]
    assert peers._RANKERS[id(default_model)] is ranker
    assert peers.longllmlingua_scores(default_model, question.question, []) == []


def test_callers_tokenizer_untouched(default_model: LoadedModel, scored: list[list[float]]) -> None:
    ranker = peers._RANKERS[id(default_model)]
    own = ranker._compressor.tokenizer
    assert own is not default_model.tokenizer and own.padding_side == "left" and own.pad_token_id is not None
    assert default_model.tokenizer.padding_side == "right"


def test_recall_at_2_beats_random(scored: list[list[float]], questions: list[HotpotQuestion]) -> None:
    recalls = []
    for scores, question in zip(scored, questions):
        top2 = sorted(range(len(scores)), key=lambda i: -scores[i])[:2]
        recalls.append(len(question.gold.intersection(top2)) / len(question.gold))
    mean = sum(recalls) / len(recalls)
    # Random picks 2 of 10 paragraphs: expected recall@2 = 0.2. Seen: 0.5625 on dev 2000-2007.
    assert mean > 0.25, recalls


def test_missing_llmlingua_says_how_to_install(
    default_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "llmlingua", None)
    with pytest.raises(ImportError, match=r"pip install 'ragfocus\[eval\]'"):
        peers.LongLLMLinguaRanker(default_model)
