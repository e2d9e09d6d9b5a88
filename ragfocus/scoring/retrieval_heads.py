"""Retrieval-head ranking: calibrated query->passage attention mass (ICR).

Chen et al., "Attention in Large Language Models Yields Efficient Zero-Shot Re-Rankers"
(ICLR 2025): a passage's relevance is the attention its tokens receive from the query
tokens, summed over a set of heads, minus the attention they receive from a content-free
query ("N/A") in the same position, which removes the model's intrinsic bias towards some
tokens and positions. Tokens that soak up attention whatever the query (attention sinks
beyond the first token: "Hidden Attention Sinks", ACT) are masked from both before summing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ragfocus.engine import AttentionEngine, HeadSet
from ragfocus.prompt import TokenizedPrompt

DEFAULT_SINK_FACTOR = 50.0
"""A passage token is a sink when the content-free query gives it more than this many times
the median attention of passage tokens (averaged over the selected heads)."""


@dataclass(frozen=True)
class RetrievalHeadScores:
    """Per passage: calibrated score, the raw query mass and the content-free mass."""

    calibrated: list[float]
    query_mass: list[float]
    null_mass: list[float]
    sink_tokens: int


def score_retrieval_heads(
    engine: AttentionEngine,
    prompt: TokenizedPrompt,
    heads: HeadSet,
    *,
    sink_factor: float | None = DEFAULT_SINK_FACTOR,
) -> RetrievalHeadScores:
    """Score each passage span of ``prompt`` by calibrated attention over ``heads``.

    Per head, a token's attention is averaged over the query's tokens (the real query and
    "N/A" differ in length), summed over the passage's tokens, then summed over heads.
    """
    query_rows, null_rows = engine.suffix_attention(
        prompt.prefix_ids,
        [prompt.query_ids, prompt.null_ids],
        rows=[prompt.query_rows, prompt.null_rows],
        heads=heads,
    )
    query_per_token = query_rows.mean(dim=1).sum(dim=0)  # (prefix tokens,)
    null_per_token = null_rows.mean(dim=1).sum(dim=0)
    keep = _non_sink_mask(null_per_token, prompt.passage_spans, sink_factor)
    query_per_token = query_per_token * keep
    null_per_token = null_per_token * keep
    query_mass = _span_sums(query_per_token, prompt.passage_spans)
    null_mass = _span_sums(null_per_token, prompt.passage_spans)
    return RetrievalHeadScores(
        calibrated=[q - n for q, n in zip(query_mass, null_mass)],
        query_mass=query_mass,
        null_mass=null_mass,
        sink_tokens=int((~keep.bool()).sum()),
    )


def _non_sink_mask(
    null_per_token: torch.Tensor, spans: list[tuple[int, int]], sink_factor: float | None
) -> torch.Tensor:
    keep = torch.ones_like(null_per_token)
    if sink_factor is None:
        return keep
    inside = torch.cat([null_per_token[start:end] for start, end in spans if end > start] or [null_per_token[:0]])
    if inside.numel() == 0:
        return keep
    keep[null_per_token > sink_factor * inside.median()] = 0.0
    return keep


def _span_sums(per_token: torch.Tensor, spans: list[tuple[int, int]]) -> list[float]:
    cumulative = torch.cat([per_token.new_zeros(1), per_token.double().cumsum(0)])
    return [float(cumulative[end] - cumulative[start]) for start, end in spans]
