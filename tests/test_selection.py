"""``SelectionConfig`` validation and ``select``: budget, ratio, top-k, threshold, order."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
from _tokenizers import smollm2_tokenizer

from ragfocus.ordering import arrange
from ragfocus.selection import Selection, SelectionConfig, select
from ragfocus.tokens import TokenCounter, token_counter
from ragfocus.types import ORDERS, Passage, ScoredPassage


@pytest.fixture(scope="session")
def count() -> TokenCounter:
    return token_counter(smollm2_tokenizer())


def words(text: str) -> int:
    """A counter whose arithmetic is easy to follow: one token per word, separators cost nothing."""
    return len(text.split())


def ranked(texts: Sequence[str], scores: Sequence[float] | None = None) -> list[ScoredPassage]:
    """ScoredPassages for ``texts`` (input order), best first; rank 0 has the highest score."""
    if scores is None:
        scores = [-float(index) for index in range(len(texts))]
    by_score = sorted(range(len(texts)), key=lambda index: -scores[index])
    return [
        ScoredPassage(
            index=index, rank=rank, text=texts[index], score=scores[index], signals={}, passage=Passage(texts[index])
        )
        for rank, index in enumerate(by_score)
    ]


def kept_indices(selection: Selection) -> list[int]:
    return [passage.index for passage in selection.kept]


def check_partition(selection: Selection, passages: list[ScoredPassage]) -> None:
    """kept + dropped is the input, each passage once; dropped in rank order; context matches kept."""
    every = [passage.index for passage in [*selection.kept, *selection.dropped]]
    assert sorted(every) == sorted(passage.index for passage in passages)
    assert len(every) == len(set(every))
    dropped_ranks = [passage.rank for passage in selection.dropped]
    assert dropped_ranks == sorted(dropped_ranks)


TEXTS = [
    "The Eiffel Tower is in Paris and was completed in 1889 for the World's Fair.",
    "Bananas are berries.",
    "   ",
    "Mount Everest, at 8,849 metres, is the highest mountain above sea level; it lies between Nepal and China.",
    "",
    "Water boils at 100 °C at sea level.",
    "The Great Wall of China is visible from low orbit only under good conditions, contrary to popular belief.",
    "Octopuses have three hearts.",
]
SCORES = [0.2, 0.9, 5.0, 0.4, 4.0, -0.3, 0.7, 0.1]  # whitespace passages rank high: still never kept
NON_EMPTY = {0, 1, 3, 5, 6, 7}


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("options", "error", "name"),
    [
        ({"budget": -1}, ValueError, "budget"),
        ({"budget": True}, TypeError, "budget"),
        ({"budget": 10.0}, TypeError, "budget"),
        ({"budget": "10"}, TypeError, "budget"),
        ({"ratio": -0.01}, ValueError, "ratio"),
        ({"ratio": 1.01}, ValueError, "ratio"),
        ({"ratio": math.nan}, ValueError, "ratio"),
        ({"ratio": True}, TypeError, "ratio"),
        ({"ratio": "0.5"}, TypeError, "ratio"),
        ({"budget": 100, "ratio": 0.5}, ValueError, "budget"),
        ({"budget": 100, "ratio": 0.5}, ValueError, "ratio"),
        ({"top_k": -1}, ValueError, "top_k"),
        ({"top_k": 2.0}, TypeError, "top_k"),
        ({"top_k": False}, TypeError, "top_k"),
        ({"threshold": math.nan}, ValueError, "threshold"),
        ({"threshold": "0.5"}, TypeError, "threshold"),
        ({"order": "middle"}, ValueError, "order"),
        ({"order": None}, ValueError, "order"),
        ({"separator": None}, TypeError, "separator"),
        ({"separator": b"\n\n"}, TypeError, "separator"),
    ],
)
def test_bad_config_raises_naming_the_option(options: dict[str, Any], error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=name):
        SelectionConfig(**options)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"budget": 0},
        {"ratio": 0},
        {"ratio": 1.0},
        {"top_k": 0},
        {"threshold": -math.inf},
        {"threshold": 0},
        *({"order": order} for order in ORDERS),
        {"separator": ""},
    ],
)
def test_valid_config(options: dict[str, Any]) -> None:
    config = SelectionConfig(**options)
    for key, value in options.items():
        assert getattr(config, key) == value


# ---------------------------------------------------------------- budget


@pytest.mark.parametrize("order", ORDERS)
def test_budget_is_never_exceeded(count: TokenCounter, order: str) -> None:
    passages = ranked(TEXTS, SCORES)
    total = count("\n\n".join(TEXTS))
    kept_counts: set[int] = set()
    for budget in range(total + 5):
        selection = select(passages, SelectionConfig(budget=budget, order=order), count)  # type: ignore[arg-type]
        assert selection.budget == budget
        assert selection.tokens_in == total
        assert selection.tokens_out <= budget
        assert selection.tokens_out == count(selection.context)
        assert selection.context == "\n\n".join(passage.text for passage in selection.kept)
        assert selection.kept == arrange(selection.kept, order)  # type: ignore[arg-type]
        check_partition(selection, passages)
        kept_counts.add(len(selection.kept))
    assert set(kept_indices(selection)) == NON_EMPTY  # a budget above the whole input keeps everything
    assert kept_counts == set(range(len(NON_EMPTY) + 1))  # the loop went through every size


def test_budget_below_every_passage_keeps_nothing(count: TokenCounter) -> None:
    passages = ranked(TEXTS, SCORES)
    smallest = min(count(TEXTS[index]) for index in NON_EMPTY)
    selection = select(passages, SelectionConfig(budget=smallest - 1), count)
    assert selection.kept == []
    assert selection.context == ""
    assert selection.tokens_out == 0
    assert selection.dropped == passages


def test_budget_zero_keeps_nothing() -> None:
    selection = select(ranked(["a b", "c"]), SelectionConfig(budget=0), words)
    assert (selection.kept, selection.context, selection.tokens_out) == ([], "", 0)


def test_smaller_lower_ranked_passage_fills_the_leftover_budget() -> None:
    texts = ["one two three four", "w " * 10, "five", "six seven"]  # 4, 10, 1, 2 words; ranked in input order
    selection = select(ranked(texts), SelectionConfig(budget=5), words)
    assert kept_indices(selection) == [0, 2]  # the 10-word passage is skipped, "five" fills the gap
    assert selection.tokens_out == 5
    assert [passage.index for passage in selection.dropped] == [1, 3]


def test_big_best_passage_is_skipped_for_smaller_ones() -> None:
    selection = select(ranked(["w " * 10, "a b c"]), SelectionConfig(budget=5), words)
    assert kept_indices(selection) == [1]


# ---------------------------------------------------------------- ratio, top-k, threshold


@pytest.mark.parametrize(("ratio", "budget"), [(0.0, 0), (0.3, 2), (0.5, 3), (0.99, 6), (1.0, 7)])
def test_ratio_becomes_floor_of_ratio_times_tokens_in(ratio: float, budget: int) -> None:
    texts = ["a b c", "d e", "f", "g"]  # 7 words
    selection = select(ranked(texts), SelectionConfig(ratio=ratio), words)
    assert selection.tokens_in == 7
    assert selection.budget == budget
    assert selection.tokens_out <= budget


def test_ratio_counts_the_input_in_input_order(count: TokenCounter) -> None:
    passages = ranked(TEXTS, SCORES)  # rank order differs from input order
    selection = select(passages, SelectionConfig(ratio=0.4), count)
    assert selection.tokens_in == count("\n\n".join(TEXTS))
    assert selection.budget == math.floor(0.4 * selection.tokens_in)
    assert 0 < selection.tokens_out <= selection.budget


@pytest.mark.parametrize(
    ("top_k", "expected"), [(0, []), (1, [1]), (2, [1, 6]), (3, [1, 6, 3]), (100, [1, 6, 3, 0, 7, 5])]
)
def test_top_k_keeps_the_best(top_k: int, expected: list[int]) -> None:
    selection = select(ranked(TEXTS, SCORES), SelectionConfig(top_k=top_k), words)
    assert kept_indices(selection) == expected
    assert selection.budget is None


@pytest.mark.parametrize(
    ("threshold", "expected"), [(0.4, [1, 6, 3]), (0.41, [1, 6]), (10.0, []), (-1.0, [1, 6, 3, 0, 7, 5])]
)
def test_threshold_keeps_scores_at_or_above(threshold: float, expected: list[int]) -> None:
    selection = select(ranked(TEXTS, SCORES), SelectionConfig(threshold=threshold), words)
    assert kept_indices(selection) == expected
    assert all(passage.score >= threshold for passage in selection.kept)


def test_limits_apply_together_threshold_then_top_k_then_budget() -> None:
    texts = ["a b c d e", "f g", "h", "i", "j"]
    scores = [0.9, 0.8, 0.7, 0.1, -0.5]
    # threshold 0.5 -> 0, 1, 2; top_k 2 -> 0, 1; budget 3 -> 0 (5 words) skipped, 1 (2 words) kept.
    # Passage 2 would fit in the leftover word, but top_k removed it before the budget.
    config = SelectionConfig(threshold=0.5, top_k=2, budget=3)
    selection = select(ranked(texts, scores), config, words)
    assert kept_indices(selection) == [1]
    assert [passage.index for passage in selection.dropped] == [0, 2, 3, 4]


# ---------------------------------------------------------------- what is kept, where


def test_no_limit_keeps_every_non_empty_passage(count: TokenCounter) -> None:
    passages = ranked(TEXTS, SCORES)
    selection = select(passages, SelectionConfig(), count)
    assert set(kept_indices(selection)) == NON_EMPTY
    assert {passage.index for passage in selection.dropped} == {2, 4}
    assert selection.budget is None
    assert selection.tokens_out == count(selection.context)
    check_partition(selection, passages)


@pytest.mark.parametrize(
    "config",
    [SelectionConfig(), SelectionConfig(budget=10_000), SelectionConfig(threshold=-math.inf), SelectionConfig(top_k=8)],
)
def test_empty_and_whitespace_passages_are_never_kept(config: SelectionConfig) -> None:
    selection = select(ranked(["", " \n\t ", "real text", "\n"], [3.0, 2.0, 1.0, 0.0]), config, words)
    assert kept_indices(selection) == [2]
    assert [passage.index for passage in selection.dropped] == [0, 1, 3]


@pytest.mark.parametrize(
    "config", [SelectionConfig(budget=12, order="edges"), SelectionConfig(top_k=3, order="original")]
)
def test_partition_and_rank_ordered_dropped(count: TokenCounter, config: SelectionConfig) -> None:
    passages = ranked(TEXTS, SCORES)
    selection = select(passages, config, count)
    assert selection.kept and selection.dropped
    check_partition(selection, passages)


def test_order_and_separator_shape_the_context() -> None:
    texts = ["alpha", "beta", "gamma", "delta"]
    passages = ranked(texts, [0.1, 0.4, 0.3, 0.2])  # ranks: beta, gamma, delta, alpha
    for order, expected in [
        ("original", ["alpha", "beta", "gamma", "delta"]),
        ("relevance", ["beta", "gamma", "delta", "alpha"]),
        ("attention", ["alpha", "delta", "gamma", "beta"]),
        ("edges", ["beta", "delta", "alpha", "gamma"]),
    ]:
        selection = select(passages, SelectionConfig(order=order, separator=" | "), words)  # type: ignore[arg-type]
        assert selection.context == " | ".join(expected)
        assert [passage.text for passage in selection.kept] == expected


def test_budget_zero_with_an_estimating_counter_keeps_nothing() -> None:
    count = token_counter(lambda text: len(text) // 4 + 1)
    passages = [ScoredPassage(0, 0, "a long passage here", 1.0, {}, Passage("a long passage here"))]
    chosen = select(passages, SelectionConfig(budget=0), count)
    assert (chosen.context, chosen.tokens_out, chosen.kept) == ("", 0, [])
