"""Retrieval-head ranking: calibrated query->passage attention mass (ICR).

Chen et al., "Attention in Large Language Models Yields Efficient Zero-Shot Re-Rankers"
(ICLR 2025): a passage's relevance is the attention its tokens receive from the query
tokens, summed over a set of heads, minus the attention they receive from a content-free
query ("N/A") in the same position, which removes the model's intrinsic bias towards some
tokens and positions. Tokens that soak up attention whatever the query (attention sinks
beyond the first token: "Hidden Attention Sinks", ACT) are masked from both before summing.

ICR sums the attention over a passage's tokens (``aggregate="sum"``). ragfocus averages it
(``aggregate="mean"``, the default): on HotpotQA dev questions 0-239 with SmolLM2-135M and the
middle-layer heads, recall@2 is 0.56 for the mean against 0.49 for the sum (both calibrated,
sinks masked), because the sum also rewards length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ragfocus.engine import AttentionEngine, HeadSet
from ragfocus.prompt import TokenizedPrompt
from ragfocus.scoring.heads import head_order, head_set

Aggregate = Literal["mean", "sum"]
AGGREGATES: tuple[str, ...] = ("mean", "sum")

DEFAULT_SINK_FACTOR = 50.0
"""A passage token is a sink when the content-free query gives it more than this many times
the median attention of passage tokens (averaged over the selected heads)."""


@dataclass(frozen=True)
class RetrievalHeadScores:
    """Per passage: calibrated score, the query's attention and the content-free attention
    (each a mean per passage token, or a sum over them, as aggregated)."""

    calibrated: list[float]
    query_mass: list[float]
    null_mass: list[float]
    sink_tokens: int


@dataclass(frozen=True)
class HeadAttention:
    """Per head, the attention each prefix token receives, averaged over the query's rows
    (``query``) and over the content-free query's rows (``null``): (heads, prefix tokens)."""

    heads: tuple[tuple[int, int], ...]
    """(layer, head) of each row, in layer order."""
    query: torch.Tensor
    null: torch.Tensor
    sort: torch.Tensor | None = None
    """With ``sort=True``: per head, the attention of the attention-sorting suffix's last
    position (the one that would produce the answer's first token) over the prefix."""

    def rows(self, heads: HeadSet) -> list[int]:
        """Row indices of ``heads``; every one must have been captured."""
        position = {pair: row for row, pair in enumerate(self.heads)}
        wanted = [(int(layer), int(head)) for layer, layer_heads in heads.items() for head in layer_heads]
        missing = [pair for pair in wanted if pair not in position]
        if missing:
            raise ValueError(f"heads {missing[:5]} were not captured")
        return sorted({position[pair] for pair in wanted})


def capture_head_attention(
    engine: AttentionEngine, prompt: TokenizedPrompt, heads: HeadSet, *, sort: bool = False
) -> HeadAttention:
    """Run the query and the content-free suffix over the prompt's prefix and keep, per
    head, the attention every prefix token receives (mean over each query's tokens, since the
    real query and "N/A" differ in length). With ``sort=True`` the attention-sorting suffix
    runs in the same batch over the same cache (the first round of attention sorting costs
    no extra prefill)."""
    order = head_order(heads)
    suffixes = [prompt.query_ids, prompt.null_ids]
    rows = [prompt.query_rows, prompt.null_rows]
    if sort:
        suffixes.append(prompt.sort_ids)
        rows.append(prompt.sort_rows)
    captured = engine.suffix_attention(prompt.prefix_ids, suffixes, rows=rows, heads=heads)
    return HeadAttention(
        heads=order,
        query=captured[0].mean(dim=1),
        null=captured[1].mean(dim=1),
        sort=captured[2][:, -1] if sort else None,
    )


def score_head_set(
    attention: HeadAttention,
    heads: HeadSet,
    spans: list[tuple[int, int]],
    *,
    sink_factor: float | None = DEFAULT_SINK_FACTOR,
    aggregate: Aggregate = "mean",
) -> RetrievalHeadScores:
    """Passage scores from the captured attention of ``heads``: summed over the heads, then
    sinks masked and each passage's tokens averaged (or summed)."""
    rows = attention.rows(heads)
    return passage_scores(
        attention.query[rows].sum(dim=0),
        attention.null[rows].sum(dim=0),
        spans,
        sink_factor=sink_factor,
        aggregate=aggregate,
    )


def score_retrieval_heads(
    engine: AttentionEngine,
    prompt: TokenizedPrompt,
    heads: HeadSet,
    *,
    sink_factor: float | None = DEFAULT_SINK_FACTOR,
    aggregate: Aggregate = "mean",
) -> RetrievalHeadScores:
    """Score each passage span of ``prompt`` by calibrated attention over ``heads``.

    Per head, a token's attention is averaged over the query's tokens (the real query and
    "N/A" differ in length) and summed over heads; then averaged (or summed) over the
    passage's unmasked tokens.
    """
    check_aggregate(aggregate)
    attention = capture_head_attention(engine, prompt, heads)
    return score_head_set(attention, heads, prompt.passage_spans, sink_factor=sink_factor, aggregate=aggregate)


def check_aggregate(aggregate: str) -> None:
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r} is not one of {', '.join(AGGREGATES)}")


def passage_scores(
    query_per_token: torch.Tensor,
    null_per_token: torch.Tensor,
    spans: list[tuple[int, int]],
    *,
    sink_factor: float | None = DEFAULT_SINK_FACTOR,
    aggregate: Aggregate = "mean",
) -> RetrievalHeadScores:
    """Turn per-token attention (query and content-free, summed over heads) into passage
    scores: mask sinks, then sum or average over each span."""
    check_aggregate(aggregate)
    keep = _non_sink_mask(null_per_token, spans, sink_factor)
    query_per_token = query_per_token * keep
    null_per_token = null_per_token * keep
    query_mass = _span_sums(query_per_token, spans)
    null_mass = _span_sums(null_per_token, spans)
    if aggregate == "mean":
        counts = _span_sums(keep, spans)
        query_mass = [value / max(count, 1.0) for value, count in zip(query_mass, counts)]
        null_mass = [value / max(count, 1.0) for value, count in zip(null_mass, counts)]
    return RetrievalHeadScores(
        calibrated=[q - n for q, n in zip(query_mass, null_mass)],
        query_mass=query_mass,
        null_mass=null_mass,
        sink_tokens=int((~keep.bool()).sum()),
    )


def per_head_calibrated(
    attention: HeadAttention,
    heads: HeadSet,
    spans: list[tuple[int, int]],
    *,
    sink_factor: float | None = DEFAULT_SINK_FACTOR,
) -> tuple[tuple[tuple[int, int], ...], torch.Tensor]:
    """Each head's own calibrated passage scores (mean per unmasked token of query minus
    content-free attention): ``(heads in row order, tensor (heads, passages))``. One sink mask,
    from the content-free attention summed over ``heads``, serves every head. What learned
    head weights read."""
    rows = attention.rows(heads)
    query = attention.query[rows].double()
    null = attention.null[rows].double()
    keep = _non_sink_mask(null.sum(dim=0), spans, sink_factor).double()
    calibrated = (query - null) * keep
    cumulative = torch.cat([calibrated.new_zeros(len(rows), 1), calibrated.cumsum(dim=1)], dim=1)
    kept = torch.cat([keep.new_zeros(1), keep.cumsum(dim=0)])
    starts = torch.tensor([start for start, _ in spans], dtype=torch.long, device=calibrated.device)
    ends = torch.tensor([end for _, end in spans], dtype=torch.long, device=calibrated.device)
    sums = cumulative[:, ends] - cumulative[:, starts]
    counts = (kept[ends] - kept[starts]).clamp(min=1.0)
    return tuple(attention.heads[row] for row in rows), (sums / counts).cpu()


def learned_head_scores(
    attention: HeadAttention,
    weights: Sequence[tuple[int, int, float]],
    spans: list[tuple[int, int]],
    *,
    sink_factor: float | None = DEFAULT_SINK_FACTOR,
) -> list[float]:
    """Per passage: sum over ``weights`` (layer, head, weight) of the weight times that head's
    calibrated score z-scored over the passages (zero for a head whose scores do not vary)."""
    return combine_head_features(learned_head_features(attention, weights, spans, sink_factor=sink_factor), weights)


def learned_head_features(
    attention: HeadAttention,
    weights: Sequence[tuple[int, int, float]],
    spans: list[tuple[int, int]],
    *,
    sink_factor: float | None = DEFAULT_SINK_FACTOR,
) -> torch.Tensor:
    """Each weighted head's calibrated passage scores, (heads in ``weights`` order, passages):
    what ``combine_head_features`` turns into the learned-heads signal. Features of several
    windows are concatenated along the passages before combining."""
    heads = head_set([(layer, head) for layer, head, _ in weights])
    order, scores = per_head_calibrated(attention, heads, spans, sink_factor=sink_factor)
    row = {pair: number for number, pair in enumerate(order)}
    return scores[[row[(layer, head)] for layer, head, _ in weights]]


def combine_head_features(features: torch.Tensor, weights: Sequence[tuple[int, int, float]]) -> list[float]:
    """Per passage (column): the weighted sum of each head's scores z-scored over the passages."""
    weight = torch.tensor([value for _, _, value in weights], dtype=torch.float64)
    scores = features.double()
    mean = scores.mean(dim=1, keepdim=True)
    spread = scores.std(dim=1, unbiased=False, keepdim=True)
    standard = torch.where(spread > 1e-12, (scores - mean) / spread.clamp(min=1e-12), torch.zeros_like(scores))
    return [float(value) for value in weight @ standard]


def calibrated_per_token(
    attention: HeadAttention,
    heads: HeadSet,
    spans: list[tuple[int, int]],
    *,
    sink_factor: float | None = DEFAULT_SINK_FACTOR,
) -> torch.Tensor:
    """Per prefix token: query attention minus content-free attention, summed over ``heads``,
    sinks set to NaN (they carry no evidence). What sentence pruning reads."""
    rows = attention.rows(heads)
    query = attention.query[rows].sum(dim=0)
    null = attention.null[rows].sum(dim=0)
    keep = _non_sink_mask(null, spans, sink_factor)
    calibrated = (query - null).double()
    calibrated[keep == 0] = float("nan")
    return calibrated


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
