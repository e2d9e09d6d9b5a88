"""``arrange``: where kept passages go in the context, for every order."""

from __future__ import annotations

import pytest

from ragfocus.ordering import arrange, edges_layout
from ragfocus.types import ORDERS, Passage, ScoredPassage


def scored(index: int, rank: int) -> ScoredPassage:
    text = f"passage {index}"
    return ScoredPassage(
        index=index, rank=rank, text=text, score=-float(rank), signals={}, passage=Passage(text=text)
    )


# Input positions 0..5 with ranks that differ from both input order and list order.
RANKS_BY_INDEX = [3, 0, 5, 1, 4, 2]
SHUFFLED = [scored(index, RANKS_BY_INDEX[index]) for index in (4, 0, 5, 2, 1, 3)]


def ranks(passages: list[ScoredPassage]) -> list[int]:
    return [passage.rank for passage in passages]


def indices(passages: list[ScoredPassage]) -> list[int]:
    return [passage.index for passage in passages]


@pytest.mark.parametrize("order", ORDERS)
def test_every_order_is_a_permutation_and_leaves_the_input_alone(order: str) -> None:
    before = list(SHUFFLED)
    arranged = arrange(SHUFFLED, order)  # type: ignore[arg-type]
    assert sorted(indices(arranged)) == list(range(6))
    assert len(set(map(id, arranged))) == len(arranged) == 6
    assert SHUFFLED == before


def test_original_is_input_order() -> None:
    assert indices(arrange(SHUFFLED, "original")) == [0, 1, 2, 3, 4, 5]


def test_relevance_is_best_first() -> None:
    arranged = arrange(SHUFFLED, "relevance")
    assert ranks(arranged) == [0, 1, 2, 3, 4, 5]
    assert indices(arranged) == [1, 3, 5, 0, 4, 2]


def test_attention_is_best_last() -> None:
    arranged = arrange(SHUFFLED, "attention")
    assert ranks(arranged) == [5, 4, 3, 2, 1, 0]
    assert arranged[-1].index == 1


def test_edges_puts_the_best_at_both_ends() -> None:
    # best first, second best last, third second, fourth second to last, ...
    assert ranks(arrange(SHUFFLED, "edges")) == [0, 2, 4, 5, 3, 1]
    assert ranks(arrange(SHUFFLED[:5], "edges")) == sorted_edges(sorted(ranks(SHUFFLED[:5])))


def sorted_edges(best_first: list[int]) -> list[int]:
    """The documented layout, written out position by position."""
    layout: list[int | None] = [None] * len(best_first)
    left, right = 0, len(best_first) - 1
    for position, rank in enumerate(best_first):
        if position % 2 == 0:
            layout[left], left = rank, left + 1
        else:
            layout[right], right = rank, right - 1
    return [rank for rank in layout if rank is not None]


@pytest.mark.parametrize("size", range(8))
def test_edges_for_every_size(size: int) -> None:
    passages = [scored(index, rank) for index, rank in enumerate(reversed(range(size)))]
    arranged = ranks(arrange(passages, "edges"))
    assert arranged == sorted_edges(list(range(size)))
    if size >= 2:
        assert arranged[0] == 0 and arranged[-1] == 1
    if size >= 3:
        assert arranged[1] == 2
    # The weakest passage sits in the middle: ranks rise to it, then fall.
    if size:
        peak = arranged.index(size - 1)
        assert arranged[: peak + 1] == sorted(arranged[: peak + 1])
        assert arranged[peak:] == sorted(arranged[peak:], reverse=True)


def test_edges_layout_on_plain_values() -> None:
    assert edges_layout([1, 2, 3, 4, 5]) == [1, 3, 5, 4, 2]
    assert edges_layout([]) == []


@pytest.mark.parametrize("order", ORDERS)
def test_empty_input(order: str) -> None:
    assert arrange([], order) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("order", ["middle", "RELEVANCE", "", None])
def test_invalid_order_raises(order: object) -> None:
    with pytest.raises(ValueError, match="order="):
        arrange(SHUFFLED, order)  # type: ignore[arg-type]
