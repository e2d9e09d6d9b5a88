"""The attention signals of many ranking prompts at once, on the device that captured them.

The same quantities as ``retrieval_heads.score_head_set`` (ICR's calibrated attention, Chen et
al., ICLR 2025, with sinks masked), ``retrieval_heads.learned_head_features`` with ``combine_head_features``, and
``attention_sort.passage_attention`` (Peysakhovich & Lerer, 2023) compute for one prompt, but
for a padded batch of prompts in a handful of tensor operations: per-passage sums are one
batched product with a token-to-passage matrix, and the sink threshold is a per-prompt median
over passage tokens. Only the per-passage results (a few numbers per passage) leave the
device, in one copy that the host does not wait for (``PendingSignals``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ragfocus.engine import HeadSet
from ragfocus.engine.kernels import HostCopy, to_device
from ragfocus.scoring.retrieval_heads import Aggregate, check_aggregate


@dataclass(frozen=True)
class PromptSignals:
    """One prompt's attention signals, per passage in prompt order."""

    calibrated: list[float]
    query_mass: list[float]
    null_mass: list[float]
    learned: list[float] | None
    """The learned-heads signal: ``retrieval_heads.combine_head_features`` of the weighted
    heads' calibrated passage scores, computed on the device for the whole batch; or ``None``."""
    sort: list[float] | None
    """Mean attention per token of the sorting suffix's answer position (summed over the sort
    heads), or ``None``."""
    features: torch.Tensor | None = None
    """With ``features=True``: the weighted heads' own calibrated passage scores, float64
    (heads in ``weights`` order, passages), what ``learned`` combines; windows of one input
    combine theirs together (``ragfocus.pipeline.texts``)."""
    per_token: torch.Tensor | None = None
    """With ``per_token=True``: per prefix token, the retrieval heads' query minus content-free
    attention, NaN at sinks (what sentence pruning reads), float64 (prefix tokens,)."""


@dataclass(frozen=True)
class PendingSignals:
    """``launch_prompt_signals``' results on their way to the host (``kernels.HostCopy``);
    ``result`` waits for them."""

    copy: HostCopy | None
    sizes: list[int]
    shapes: list[tuple[int, ...]]
    spans: Sequence[Sequence[tuple[int, int]]]
    names: tuple[str, ...]
    """What each part of the copy holds: ``query``, ``null`` and any of ``learned``,
    ``features``, ``per_token``, ``sort``."""
    prefix_lengths: Sequence[int] = ()

    def result(self) -> list[PromptSignals]:
        if self.copy is None:
            return []
        flat = self.copy.result()
        host = dict(zip(self.names, (part.reshape(shape) for part, shape in zip(flat.split(self.sizes, dim=1), self.shapes))))
        signals = []
        for element, prompt_spans in enumerate(self.spans):
            count = len(prompt_spans)
            query_list = host["query"][element, :count].tolist()
            null_list = host["null"][element, :count].tolist()
            signals.append(
                PromptSignals(
                    calibrated=[q - n for q, n in zip(query_list, null_list)],
                    query_mass=query_list,
                    null_mass=null_list,
                    learned=host["learned"][element, :count].tolist() if "learned" in host else None,
                    sort=host["sort"][element, :count].tolist() if "sort" in host else None,
                    features=host["features"][element, :, :count].clone() if "features" in host else None,
                    per_token=host["per_token"][element, : self.prefix_lengths[element]].clone() if "per_token" in host else None,
                )
            )
        return signals


def launch_prompt_signals(
    captured: torch.Tensor,
    order: Sequence[tuple[int, int]],
    spans: Sequence[Sequence[tuple[int, int]]],
    *,
    heads: HeadSet,
    weights: Sequence[tuple[int, int, float]] = (),
    sort_heads: HeadSet | None = None,
    sink_factor: float | None,
    aggregate: Aggregate = "mean",
    features: bool = False,
    per_token: Sequence[int] | None = None,
) -> PendingSignals:
    """Signals of each prompt from its captured attention, computed on its device and copied
    back without waiting (``PendingSignals.result`` waits).

    Args:
        captured: (prompts, suffixes, heads in ``order``, prefix width) as
            ``AttentionEngine.suffix_attention_batch`` returns, the suffixes ``[query, null]``
            or ``[query, null, sort]``.
        order: the (layer, head) of each captured row.
        spans: per prompt, each passage's [start, end) prefix tokens.
        heads: the retrieval heads summed into the calibrated score.
        weights: (layer, head, weight) of the learned heads, combined into one signal.
        sort_heads: the heads of attention sorting (needs a third, sorting, capture).
        features: also return the weighted heads' own passage scores (``PromptSignals.features``).
        per_token: each prompt's prefix length: also return the calibrated attention of every
            prefix token (``PromptSignals.per_token``), for sentence scores.
    """
    check_aggregate(aggregate)
    if captured.shape[0] == 0:
        return PendingSignals(None, [], [], [], ())
    if len(spans) != captured.shape[0]:
        raise ValueError("one list of passage spans is needed per prompt")
    device = captured.device
    row_of = {pair: row for row, pair in enumerate(order)}
    retrieval_rows = _rows(row_of, heads)
    width = captured.shape[-1]
    passages = max(len(prompt_spans) for prompt_spans in spans) or 1
    query, null = captured[:, 0], captured[:, 1]
    membership, inside, lengths = _membership(spans, width, passages, device)

    retrieval_index = _index(retrieval_rows, device)
    query_sum = query.index_select(1, retrieval_index).sum(dim=1)
    null_sum = null.index_select(1, retrieval_index).sum(dim=1)
    keep = _non_sink(null_sum, inside, sink_factor)
    query_mass = _span_sums((query_sum * keep).double(), membership)
    null_mass = _span_sums((null_sum * keep).double(), membership)
    if aggregate == "mean":
        counts = _span_sums(keep.double(), membership).clamp(min=1.0)
        query_mass, null_mass = query_mass / counts, null_mass / counts
    results = {"query": query_mass, "null": null_mass}
    if per_token is not None:
        calibrated_tokens = (query_sum - null_sum).double()
        results["per_token"] = calibrated_tokens.masked_fill(keep == 0, float("nan"))

    if weights:
        weighted_rows = [_row(row_of, (layer, head)) for layer, head, _ in weights]
        distinct = _index(sorted(set(weighted_rows)), device)
        weighted_index = _index(weighted_rows, device)
        weighted_keep = _non_sink(null.index_select(1, distinct).double().sum(dim=1), inside, sink_factor)
        calibrated = (query.index_select(1, weighted_index).double() - null.index_select(1, weighted_index).double()) * weighted_keep[:, None]
        sums = torch.bmm(calibrated, membership)
        counts = _span_sums(weighted_keep, membership).clamp(min=1.0)
        head_scores = sums / counts[:, None, :]
        results["learned"] = _combined(head_scores, [len(prompt_spans) for prompt_spans in spans], [w for _, _, w in weights])
        if features:
            results["features"] = head_scores
    if sort_heads is not None:
        if captured.shape[1] < 3:
            raise ValueError("attention sorting needs the sorting suffix's capture (a third per prompt)")
        sort = captured[:, 2].index_select(1, _index(_rows(row_of, sort_heads), device)).sum(dim=1).double()
        results["sort"] = _span_sums(sort, membership) / lengths.clamp(min=1.0)

    # One copy back to the host for everything: each blocking copy makes the host wait.
    parts = list(results.values())
    flat = torch.cat([tensor.reshape(len(spans), -1) for tensor in parts], dim=1)
    return PendingSignals(
        HostCopy(flat), [tensor[0].numel() for tensor in parts], [tuple(tensor.shape) for tensor in parts],
        spans, tuple(results), tuple(per_token or ()),
    )


def _combined(features: torch.Tensor, passages: Sequence[int], weights: Sequence[float]) -> torch.Tensor:
    """``retrieval_heads.combine_head_features`` of every prompt at once: (prompts, passages)
    from features (prompts, heads, passages), each prompt z-scored over its own passages only.
    On the device, so that the host does not spend time on it for every query."""
    device = features.device
    real = (torch.arange(features.shape[2], device=device)[None, :] < to_device(torch.tensor(list(passages)), device)[:, None]).double()
    count = real.sum(dim=1).clamp(min=1.0)[:, None, None]
    mask = real[:, None, :]
    mean = (features * mask).sum(dim=2, keepdim=True) / count
    spread = (((features - mean) * mask) ** 2).sum(dim=2, keepdim=True).div(count).sqrt()
    standard = torch.where(spread > 1e-12, (features - mean) / spread.clamp(min=1e-12), torch.zeros_like(features)) * mask
    weight = to_device(torch.tensor(list(weights), dtype=torch.float64), device)
    return torch.einsum("h,bhp->bp", weight, standard)


def _rows(row_of: dict[tuple[int, int], int], heads: HeadSet) -> list[int]:
    return sorted({_row(row_of, (int(layer), int(head))) for layer, layer_heads in heads.items() for head in layer_heads})


def _index(rows: Sequence[int], device: torch.device) -> torch.Tensor:
    """Row indices as a tensor on ``device``, copied without making the host wait."""
    return to_device(torch.tensor(list(rows), dtype=torch.long), device)


def _row(row_of: dict[tuple[int, int], int], pair: tuple[int, int]) -> int:
    if pair not in row_of:
        raise ValueError(f"head {pair} was not captured")
    return row_of[pair]


def _membership(
    spans: Sequence[Sequence[tuple[int, int]]], width: int, passages: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token-to-passage matrix (prompts, width, passages) float64, the passage-token mask
    (prompts, width) and each span's length (prompts, passages), built on ``device`` from the
    spans alone (a few integers per passage cross from the host)."""
    bounds = torch.zeros((len(spans), passages, 2), dtype=torch.long)
    for element, prompt_spans in enumerate(spans):
        if prompt_spans:
            bounds[element, : len(prompt_spans)] = torch.tensor([list(span) for span in prompt_spans], dtype=torch.long)
    bounds = to_device(bounds, device)
    starts, ends = bounds[..., 0], bounds[..., 1]
    tokens = torch.arange(width, device=device)[None, :, None]
    member = (tokens >= starts[:, None, :]) & (tokens < ends[:, None, :])
    lengths = (ends - starts).clamp(min=0).double()
    return member.double(), member.any(dim=2), lengths


def _non_sink(null_per_token: torch.Tensor, inside: torch.Tensor, sink_factor: float | None) -> torch.Tensor:
    """1 where a token is kept, 0 where the content-free query gives it more than
    ``sink_factor`` times the median attention of the prompt's passage tokens."""
    if sink_factor is None:
        return torch.ones_like(null_per_token)
    median = torch.nanmedian(null_per_token.masked_fill(~inside, float("nan")), dim=1).values
    sink = null_per_token > sink_factor * median[:, None]  # NaN median (no passage token): no sink
    return (~sink).to(null_per_token.dtype)


def _span_sums(per_token: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
    """(prompts, tokens) -> (prompts, passages) sums over each passage's tokens."""
    return torch.bmm(per_token.double()[:, None, :], membership)[:, 0, :]
