"""Attention rows computed from the post-RoPE queries and keys the attention hook is handed.

The capture (``ragfocus.engine.hook``) reads only the query rows a signal needs, for only the
heads it needs: ``softmax(q k^T * scale + mask)`` recomputed for those rows, equal to eager
attention's weights there (ICR, Chen et al., ICLR 2025). Three layouts: one prompt's rows
(``query_row_attention``), a right-padded batch (``packed_row_attention``) and a packed row of
many prompts (``keyed_row_attention``); plus the attention functions the hook runs in place
of SDPA where transformers would build a mask it does not need.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.nn.attention.bias import causal_lower_right

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchedRows:
    """The rows a batched capture reads (``ragfocus.engine.packing``), on the model's device:
    per element and suffix, the mean of its rows read is kept."""

    index: torch.Tensor
    """(batch, rows) long: the positions of the rows read in this forward."""
    weights: torch.Tensor
    """(batch, suffixes, rows) float32: weights @ attention is each suffix's mean row."""
    bias: torch.Tensor
    """(batch, 1, rows, keys) float32: 0 where a row may attend, -inf elsewhere."""


@dataclass(frozen=True)
class KeyedRows:
    """The rows a capture over a packed row reads (``packing.PackedPrompts``), on the model's
    device: per prompt, its rows read and its local keys, both as row positions."""

    index: torch.Tensor
    """(batch, rows) long: the row positions of the rows read."""
    window: torch.Tensor
    """(batch, keys) long: the row positions of each prompt's local keys."""
    weights: torch.Tensor
    """(batch, suffixes, rows) float32: weights @ attention is each suffix's mean row."""
    bias: torch.Tensor
    """(batch, 1, rows, keys) float32: 0 where a row may attend, -inf elsewhere."""


def lower_right_causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *, scaling: float | None) -> torch.Tensor:
    """Causal attention of ``query`` (batch, heads, n, dim) over the last n of ``key`` and
    ``value``'s m >= n positions and everything before them, grouped-query heads as they come;
    (batch, n, heads, dim) as transformers' attention functions return it."""
    if query.shape[-2] > key.shape[-2]:
        raise ValueError(f"{query.shape[-2]} queries over {key.shape[-2]} keys: a lower-right causal mask needs at least as many keys")
    output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=causal_lower_right(query.shape[-2], key.shape[-2]), scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return output.transpose(1, 2).contiguous()


def grouped_query_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    scaling: float | None = None,
) -> torch.Tensor | None:
    """Masked attention for grouped-query heads without copying the keys and values per
    query head: the query heads that share a key/value head are stacked along the query
    length, so one SDPA call reads each key/value head once. Returns the output as
    transformers' attention functions do, (batch, q_len, query_heads, dim), or ``None`` when
    the mask has a head axis of its own (then plain SDPA is used).

    With a mask, SDPA takes no grouped-query shortcut: transformers repeats every key/value
    head once per query head, a copy of the whole KV cache per layer that, measured on a GPU,
    cost the packed suffix pass more than its own attention (``docs/gpu.md``).
    """
    batch, query_heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    groups = query_heads // kv_heads
    if attention_mask is not None and (attention_mask.dim() != 4 or attention_mask.shape[1] != 1):
        return None
    stacked = query.reshape(batch, kv_heads, groups * q_len, dim)
    mask = None
    if attention_mask is not None:
        mask = attention_mask[:, :, None].expand(-1, -1, groups, -1, -1).reshape(batch, 1, groups * q_len, attention_mask.shape[-1])
    output = torch.nn.functional.scaled_dot_product_attention(stacked, key, value, attn_mask=mask, scale=scaling)
    return output.reshape(batch, query_heads, q_len, dim).transpose(1, 2).contiguous()


def query_row_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    rows: tuple[int, int],
    heads: torch.Tensor,
    scaling: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """Attention probabilities of query rows ``rows`` for query heads ``heads``.

    ``query`` is (batch, query_heads, q_len, dim) and ``key`` (batch, kv_heads, k_len, dim),
    both post-RoPE, the keys already including the cache. Returns float32
    (batch, len(heads), rows, k_len), equal to eager attention's weights for those entries.
    """
    start, end = rows
    groups = query.shape[1] // key.shape[1]
    q = query[:, heads, start:end].float()
    k = key[:, heads // groups].float()
    scores = torch.matmul(q, k.transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    q_len, k_len = query.shape[2], key.shape[2]
    positions = torch.arange(start, end, device=query.device) + (k_len - q_len)
    allowed = torch.arange(k_len, device=query.device)[None, :] <= positions[:, None]
    if attention_mask is not None:
        window = attention_mask[:, :, start:end, :k_len]
        allowed = allowed & window if window.dtype == torch.bool else allowed & (window > torch.finfo(window.dtype).min / 2)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1)


def packed_row_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    row_index: torch.Tensor,
    row_bias: torch.Tensor,
    row_weights: torch.Tensor,
    heads: torch.Tensor,
    scaling: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """Per batch element, suffix and query head in ``heads``, the weighted sum of the
    attention rows read (``ragfocus.engine.packing``): float32 (batch, suffixes, len(heads),
    k_len).

    ``query`` is (batch, query_heads, q_len, dim) and ``key`` (batch, kv_heads, k_len, dim),
    post-RoPE, the keys including the cache; ``row_index`` (batch, rows) picks the query rows,
    ``row_bias`` (batch, 1, rows, k_len) is 0 where a row may attend and -inf elsewhere, and
    ``row_weights`` (batch, suffixes, rows) sums the rows per suffix. Only the rows read are
    computed, the whole batch in a few tensor operations with no host-device synchronisation.
    """
    batch, query_heads, _, dim = query.shape
    rows = row_index.shape[1]
    picked = query.gather(2, row_index[:, None, :, None].expand(batch, query_heads, rows, dim))
    return _picked_row_attention(picked, key, row_bias=row_bias, row_weights=row_weights, heads=heads, scaling=scaling, softcap=softcap)


def keyed_row_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    rows: KeyedRows,
    *,
    heads: torch.Tensor,
    scaling: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """``packed_row_attention`` over a packed row: ``query`` (1, query_heads, tokens, dim) and
    ``key`` (1, kv_heads, tokens, dim), post-RoPE. Each prompt's rows read and its local keys
    are gathered from the row into a batch of their own: float32 (prompts, suffixes,
    len(heads), local keys)."""
    batch, count = rows.index.shape
    window = rows.window.shape[1]
    query_heads, kv_heads, dim = query.shape[1], key.shape[1], query.shape[-1]
    picked = query[0].index_select(1, rows.index.view(-1)).view(query_heads, batch, count, dim).transpose(0, 1)
    keys = key[0].index_select(1, rows.window.view(-1)).view(kv_heads, batch, window, dim).transpose(0, 1).contiguous()
    return _picked_row_attention(picked, keys, row_bias=rows.bias, row_weights=rows.weights, heads=heads, scaling=scaling, softcap=softcap)


def _picked_row_attention(
    picked: torch.Tensor,
    key: torch.Tensor,
    *,
    row_bias: torch.Tensor,
    row_weights: torch.Tensor,
    heads: torch.Tensor,
    scaling: float,
    softcap: float | None,
) -> torch.Tensor:
    """The rows read, ``picked`` (batch, query_heads, rows, dim), over ``key`` (batch,
    kv_heads, k_len, dim): ``packed_row_attention``'s result."""
    batch, query_heads, rows, dim = picked.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    groups = query_heads // kv_heads
    # The query heads that share a key/value head are stacked, so each key/value head is read
    # once; every head is scored (most are read: 184 of the default's 216 in layers 0-23) and
    # the heads read are picked from the small per-suffix sums at the end.
    scores = _row_scores(picked.reshape(batch, kv_heads, groups * rows, dim), key).view(batch, query_heads, rows, k_len)
    if softcap is not None:
        scores = torch.tanh(scores * (scaling / softcap)).mul_(softcap).add_(row_bias)
    else:
        scores = torch.add(row_bias, scores, alpha=scaling)
    probabilities = torch.softmax(scores, dim=-1)
    # (batch, 1, suffixes, rows) @ (batch, query_heads, rows, k_len): a batched matmul, no copy
    # of the probabilities.
    summed = torch.matmul(row_weights[:, None], probabilities)
    if len(heads) < query_heads:
        summed = summed[:, heads]
    return summed.transpose(1, 2)


_HALF_PRODUCTS: dict[str, bool] = {}
"""Per device type, whether ``torch.bmm(..., out_dtype=torch.float32)`` ran there."""


def _row_scores(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """``query @ key^T`` in float32, unscaled: (batch, kv_heads, n, dim) by (batch, kv_heads,
    k_len, dim).

    On CUDA, float16 and bfloat16 inputs go straight to a tensor-core product with float32
    output (``torch.bmm(..., out_dtype=torch.float32)``): the products of half-precision
    values are exact in float32 and summed in float32, as in the float32 product of their
    float32 copies, without converting the keys to float32 first. Elsewhere, or where that
    product is missing, both are converted to float32.
    """
    batch, kv_heads, n, dim = query.shape
    k_len = key.shape[2]
    device_type = query.device.type
    if query.dtype in (torch.float16, torch.bfloat16) and key.dtype == query.dtype and _HALF_PRODUCTS.get(device_type, device_type == "cuda"):
        try:
            flat = torch.bmm(query.reshape(batch * kv_heads, n, dim), key.reshape(batch * kv_heads, k_len, dim).transpose(1, 2),
                             out_dtype=torch.float32)
            _HALF_PRODUCTS[device_type] = True
            return flat.view(batch, kv_heads, n, k_len)
        except torch.OutOfMemoryError:
            raise
        except (NotImplementedError, RuntimeError, TypeError) as error:
            _HALF_PRODUCTS[device_type] = False
            logger.info("no float32-output product of %s on %s (%s); converting to float32", query.dtype, device_type, error)
    return torch.matmul(query.float(), key.float().transpose(-1, -2))
