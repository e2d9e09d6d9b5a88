"""Where kept passages go in the context.

- ``original``: the caller's order.
- ``relevance``: best first (what a reranker returns).
- ``attention``: best last, nearest the question that follows the context (Peysakhovich &
  Lerer, "Attention Sorting Combats Recency Bias in Long Context Language Models", 2023).
- ``edges``: best at both ends, weakest in the middle, where models attend least (Liu et al.,
  "Lost in the Middle", TACL 2024; the layout of LangChain's ``LongContextReorder``).
- ``calibrated``: best in the slots this model attends most, as measured on development
  questions (the fusion profile's ``slot_strength``; "Found in the Middle", Hsieh et al.
  2024; AttnRank, "Attention Basin"). Without a measurement it falls back to ``edges``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ragfocus.fusion import slot_order
from ragfocus.types import ORDERS, Order, ScoredPassage


def arrange(kept: Sequence[ScoredPassage], order: Order, slot_strength: Sequence[float] = ()) -> list[ScoredPassage]:
    """Return ``kept`` (any order) arranged for the context.

    >>> [p for p in edges_layout([1, 2, 3, 4, 5])]
    [1, 3, 5, 4, 2]
    """
    by_rank = sorted(kept, key=lambda passage: passage.rank)
    if order == "original":
        return sorted(kept, key=lambda passage: passage.index)
    if order == "relevance":
        return by_rank
    if order == "attention":
        return by_rank[::-1]
    if order == "edges" or (order == "calibrated" and not slot_strength):
        return edges_layout(by_rank)
    if order == "calibrated":
        return calibrated_layout(by_rank, slot_strength)
    raise ValueError(f"order={order!r} is not one of {', '.join(ORDERS)}")


def edges_layout(best_first: Sequence) -> list:
    """Best first, second best last, third second, ...: the weakest end up in the middle."""
    front = list(best_first[0::2])
    back = list(best_first[1::2])
    return front + back[::-1]


def calibrated_layout(best_first: Sequence, slot_strength: Sequence[float]) -> list:
    """The best item in the most attended slot, the second in the next, and so on."""
    slots = slot_order(slot_strength, len(best_first))
    layout: list = [None] * len(best_first)
    for item, slot in zip(best_first, slots):
        layout[slot] = item
    return layout
