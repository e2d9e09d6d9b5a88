"""Attention sorting: order passages by the attention the answering position gives them.

Peysakhovich & Lerer, "Attention Sorting Combats Recency Bias in Long Context Language
Models" (2023): put the passages and the question in the prompt, run one decoding step (the
position that would produce the answer's first token), measure the attention each passage
receives, sort the passages so the most attended comes LAST (nearest the question), and
repeat for a few rounds; the order the last round gives is the output.

Here the attention is read from a small set of heads (``sort_heads`` of the fusion profile,
chosen on HotpotQA development questions by their own ranking accuracy) and averaged per
passage token, so long passages are not favoured by length alone. The first round reads the
same prefix cache as retrieval-head ranking (the sort suffix runs in the same batch); each
further round re-prefills the reordered passages, stopping after the last layer needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ragfocus.engine import AttentionEngine, HeadSet
from ragfocus.prompt import TokenizedPrompt

MAX_SORT_ROUNDS = 8
"""Most rounds accepted; each round after the first costs one prefill of the prompt."""


@dataclass(frozen=True)
class AttentionSortResult:
    """Per passage (input order) the attention it received in each round, and the final order."""

    rounds: list[list[float]]
    """``rounds[r][i]``: mean attention per token of passage ``i`` in round ``r``, summed over
    the sort heads."""
    order: list[int]
    """Passage indices as the last round sorts them: least attended first, most attended last."""

    @property
    def scores(self) -> list[float]:
        """The attention of the last round: the attention-sort signal."""
        return self.rounds[-1]


def check_sort_rounds(rounds: int) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, int):
        raise TypeError(f"sort_rounds must be an int, got {rounds!r}")
    if not 0 <= rounds <= MAX_SORT_ROUNDS:
        raise ValueError(f"sort_rounds must be between 0 (off) and {MAX_SORT_ROUNDS}, got {rounds}")


def passage_attention(row: torch.Tensor, spans: Sequence[tuple[int, int]]) -> list[float]:
    """Mean attention per token of each span, from one row per head (heads, prefix tokens)
    summed over heads."""
    summed = row.sum(dim=0).double()
    cumulative = torch.cat([summed.new_zeros(1), summed.cumsum(0)])
    return [float(cumulative[end] - cumulative[start]) / max(end - start, 1) for start, end in spans]


def sorted_for_attention(scores: Sequence[float]) -> list[int]:
    """Indices ordered least attended first, most attended last (ties keep input order)."""
    return sorted(range(len(scores)), key=lambda index: (scores[index], -index))


def attention_sort(
    engine: AttentionEngine,
    prompt_for: Callable[[list[int]], TokenizedPrompt],
    count: int,
    heads: HeadSet,
    *,
    rounds: int,
    first_round: Sequence[float] | None = None,
) -> AttentionSortResult:
    """Run ``rounds`` rounds of attention sorting over ``count`` passages.

    ``prompt_for(order)`` builds the prompt with the passages in ``order`` (indices into the
    caller's list). ``first_round`` is the attention of round one when it was already read
    from the ranking pass (passages in input order).
    """
    check_sort_rounds(rounds)
    if rounds == 0:
        raise ValueError("attention sorting needs at least one round")
    history: list[list[float]] = []
    order = list(range(count))
    if first_round is not None:
        if len(first_round) != count:
            raise ValueError(f"first_round has {len(first_round)} scores for {count} passages")
        history.append(list(first_round))
    while len(history) < rounds:
        if history:
            order = sorted_for_attention(history[-1])
        prompt = prompt_for(order)
        (row,) = engine.suffix_attention(prompt.prefix_ids, [prompt.sort_ids], rows=[prompt.sort_rows], heads=heads)
        in_prompt_order = passage_attention(row[:, -1], prompt.passage_spans)
        scores = [0.0] * count
        for position, index in enumerate(order):
            scores[index] = in_prompt_order[position]
        history.append(scores)
    return AttentionSortResult(rounds=history, order=sorted_for_attention(history[-1]))
