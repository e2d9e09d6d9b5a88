"""Capture the attention rows of chosen query tokens, for chosen heads only.

This is the engine behind retrieval-head ranking (ICR: Chen et al., "Attention in Large
Language Models Yields Efficient Zero-Shot Re-Rankers", ICLR 2025): the prompt's shared
prefix (instruction and passages) is prefilled once with the KV cache kept; the query
suffix and a content-free ("N/A") suffix then run together as one small batch over that
cache, and only their query rows of attention are computed, for only the layers and heads
asked for. The forward pass stops after the last layer needed.

Everything goes through transformers' public attention interface: a function registered
with ``AttentionInterface`` that delegates to SDPA and, while a capture is active in the
current thread (a ``ContextVar``), recomputes ``softmax(q k^T * scale + mask)`` for the
selected rows and heads from the post-RoPE queries and keys it is handed. No model file is
forked and no private cache field is read. Grouped-query attention is handled by mapping
each query head to its key/value head.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.attention.bias import causal_lower_right
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ragfocus.engine.append_cache import append_in_place_cache
from ragfocus.engine.kernels import batched_attention_kernels, padded_width, to_device
from ragfocus.engine.packing import continue_prefixes, pack_prompts, pack_suffixes
from ragfocus.engine.varlen import (
    UNUSED_MASK,
    active_packed_row,
    flash_varlen_runs,
    keyed_row,
    packed_causal_attention,
    packed_prompts,
)

logger = logging.getLogger(__name__)

CAPTURE_IMPLEMENTATION = "ragfocus_capture"
"""Name under which the capturing attention is registered with transformers."""

HeadSet = Mapping[int, Sequence[int]]
"""Heads to read: layer index -> head indices (both counted from 0)."""

_HEAD_TENSOR_SETS = 64
"""How many head sets' index tensors an engine keeps (a Focuser uses three or four)."""

_REGISTER_LOCK = threading.Lock()
_registered = False


class _StopForward(Exception):
    """Raised inside the last layer needed, to skip the rest of the network."""


@dataclass(frozen=True)
class _BatchedRows:
    """The rows a batched capture reads (``ragfocus.engine.packing``), on the model's device:
    per element and suffix, the mean of its rows read is kept."""

    index: torch.Tensor
    """(batch, rows) long: the positions of the rows read in this forward."""
    weights: torch.Tensor
    """(batch, suffixes, rows) float32: weights @ attention is each suffix's mean row."""
    bias: torch.Tensor
    """(batch, 1, rows, keys) float32: 0 where a row may attend, -inf elsewhere."""


@dataclass(frozen=True)
class _KeyedRows:
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


@dataclass
class _CaptureSession:
    heads: dict[int, torch.Tensor]
    stop_after_layer: int
    rows: Sequence[tuple[int, int]] | None = None
    """Per batch element, the [start, end) positions of the query rows in this forward."""
    batched: _BatchedRows | None = None
    """The rows of a batched capture, read with ``packed_row_attention``."""
    keyed: _KeyedRows | None = None
    """The rows of a capture over a packed row, read with ``keyed_row_attention``."""
    masked_suffixes: bool = False
    """A packed suffix pass: its masked attention folds grouped-query heads
    (``grouped_query_attention``) instead of repeating the keys and values per query head."""
    captured: dict[int, list[torch.Tensor]] = field(default_factory=dict)


_ACTIVE: ContextVar[_CaptureSession | None] = ContextVar("ragfocus_capture_session", default=None)
_AFTER_CACHED_PREFIX: ContextVar[bool] = ContextVar("ragfocus_after_cached_prefix", default=False)


@contextmanager
def after_cached_prefix() -> Iterator[None]:
    """While active in this thread (and no capture is), forward passes that continue a cached
    prefix build no attention mask and run causal attention aligned to the lower right
    (``torch.nn.attention.bias.causal_lower_right``): each new token sees the whole prefix
    and the new tokens up to itself.

    This is exact for right-padded batches that all continue one prefix (no real token sees a
    pad, so no padding mask is needed). Without it, transformers builds a boolean mask for a
    query block shorter than its keys, which keeps SDPA off its flash kernel and repeats the
    grouped keys and values per query head.
    """
    token = _AFTER_CACHED_PREFIX.set(True)
    try:
        yield
    finally:
        _AFTER_CACHED_PREFIX.reset(token)


def register_capture_attention() -> None:
    """Register the capturing attention (and SDPA's mask builder) with transformers, once."""
    global _registered
    with _REGISTER_LOCK:
        if not _registered:
            AttentionInterface.register(CAPTURE_IMPLEMENTATION, _capturing_attention)
            AttentionMaskInterface.register(CAPTURE_IMPLEMENTATION, _capture_mask)
            _registered = True


def can_pack(model: torch.nn.Module) -> bool:
    """Whether ``model``'s prompts can run packed (``ragfocus.engine.varlen``): it runs
    ragfocus's registered attention with plain causal attention in every layer (no sliding
    window, no logit softcap)."""
    config = model.config
    return (
        getattr(config, "_attn_implementation", None) == CAPTURE_IMPLEMENTATION
        and not getattr(config, "sliding_window", None)
        and not getattr(config, "attn_logit_softcapping", None)
    )


def require_capture_attention(model: torch.nn.Module) -> None:
    """Raise unless ``model`` runs the registered attention (``load_model`` loads it so): the
    paths that pass no real mask (``after_cached_prefix``, ``varlen.packed_prompts``) are only
    exact through it."""
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation != CAPTURE_IMPLEMENTATION:
        raise ValueError(
            f"the model runs attention implementation {implementation!r}; packed prompts need {CAPTURE_IMPLEMENTATION!r}: "
            "load it with ragfocus.models.load_model, or call model.set_attn_implementation after register_capture_attention()"
        )


def _capture_mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    """SDPA's mask builder, skipped while ``after_cached_prefix`` or
    ``ragfocus.engine.varlen.packed_prompts`` is active."""
    if (_AFTER_CACHED_PREFIX.get() or active_packed_row() is not None) and _ACTIVE.get() is None:
        return None
    return sdpa_mask(*args, **kwargs)


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


def _capturing_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    session = _ACTIVE.get()
    packed = active_packed_row()
    if session is None:
        if packed is not None or _AFTER_CACHED_PREFIX.get():
            _require_plain_attention(kwargs)
            if packed is not None:
                return packed_causal_attention(query, key, value, packed, layer=int(module.layer_idx), scaling=kwargs.get("scaling")), None
            return lower_right_causal_attention(query, key, value, scaling=kwargs.get("scaling")), None
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    layer = int(module.layer_idx)
    if session.keyed is not None and layer in session.heads:
        session.captured[layer] = [
            keyed_row_attention(
                query, key, session.keyed,
                heads=session.heads[layer],
                scaling=kwargs.get("scaling") or query.shape[-1] ** -0.5,
                softcap=kwargs.get("softcap"),
            )
        ]
    elif session.batched is not None and layer in session.heads:
        session.captured[layer] = [
            packed_row_attention(
                query, key,
                row_index=session.batched.index,
                row_bias=session.batched.bias,
                row_weights=session.batched.weights,
                heads=session.heads[layer],
                scaling=kwargs.get("scaling") or query.shape[-1] ** -0.5,
                softcap=kwargs.get("softcap"),
            )
        ]
    elif session.rows is not None and layer in session.heads:
        session.captured[layer] = [
            query_row_attention(
                query[element : element + 1],
                key[element : element + 1],
                None if attention_mask is None else attention_mask[element : element + 1],
                rows=rows,
                heads=session.heads[layer],
                scaling=kwargs.get("scaling") or query.shape[-1] ** -0.5,
                softcap=kwargs.get("softcap"),
            )[0]
            for element, rows in enumerate(session.rows)
        ]
    if layer >= session.stop_after_layer:
        raise _StopForward
    if packed is not None:
        _require_plain_attention(kwargs)
        return packed_causal_attention(query, key, value, packed, layer=layer, scaling=kwargs.get("scaling")), None
    if session.masked_suffixes and kwargs.get("softcap") is None and kwargs.get("position_bias") is None:
        folded = grouped_query_attention(query, key, value, attention_mask, scaling=kwargs.get("scaling"))
        if folded is not None:
            return folded, None
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _require_plain_attention(kwargs: Mapping[str, Any]) -> None:
    if kwargs.get("softcap") is not None or kwargs.get("sliding_window") is not None:
        raise ValueError("packed_prompts and after_cached_prefix support plain causal attention only (no softcap, no sliding window)")


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
    head once per query head, a copy of the whole KV cache per layer that cost the packed
    suffix pass more than its own attention on an H100 (``docs/gpu.md``).
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
    rows: _KeyedRows,
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


@dataclass(frozen=True)
class DecodeStep:
    """One greedy decoding step: the token chosen and the attention that produced it."""

    token: int
    attention: torch.Tensor
    """float32 (selected heads in layer order, key positions): the attention of the query
    position whose logits chose ``token``, over the prompt and the tokens generated before."""


class AttentionEngine:
    """Query-row attention over a shared, once-prefilled prefix.

    >>> engine = AttentionEngine(loaded.model)                          # doctest: +SKIP
    >>> rows = engine.suffix_attention(prefix_ids, [query_ids, na_ids],
    ...                                rows=[(4, 12), (4, 6)], heads={14: [3], 18: [6, 7]})
    >>> rows[0].shape   # (selected heads, query rows, prefix tokens)    # doctest: +SKIP
    torch.Size([3, 8, 1487])
    """

    def __init__(self, model: torch.nn.Module) -> None:
        register_capture_attention()
        implementation = getattr(model.config, "_attn_implementation", None)
        if implementation != CAPTURE_IMPLEMENTATION:
            raise ValueError(
                f"The model uses attn_implementation={implementation!r}; load it with "
                f"ragfocus.load_model (or attn_implementation={CAPTURE_IMPLEMENTATION!r}) so attention can be captured."
            )
        self.model = model
        self.num_layers = int(model.config.num_hidden_layers)
        self.num_heads = int(model.config.num_attention_heads)
        self._head_tensors: dict[tuple[str, tuple[tuple[int, tuple[int, ...]], ...]], dict[int, torch.Tensor]] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def validate_heads(self, heads: HeadSet) -> dict[int, torch.Tensor]:
        """Check layer/head indices against the model and turn them into index tensors on the
        model's device.

        The tensors of a head set are made once and reused: each new one is a copy to the
        device, and on a GPU a copy per layer and per batch kept the host waiting.
        """
        if not heads:
            raise ValueError("heads is empty: name at least one (layer, head) to read")
        checked: list[tuple[int, tuple[int, ...]]] = []
        for layer, layer_heads in sorted(heads.items()):
            if not 0 <= int(layer) < self.num_layers:
                raise ValueError(f"layer {layer} is out of range: the model has layers 0-{self.num_layers - 1}")
            indices = sorted({int(h) for h in layer_heads})
            if not indices or indices[0] < 0 or indices[-1] >= self.num_heads:
                raise ValueError(f"heads {list(layer_heads)} of layer {layer} are out of range 0-{self.num_heads - 1}")
            checked.append((int(layer), tuple(indices)))
        device = self.device
        key = (str(device), tuple(checked))
        tensors = self._head_tensors.get(key)
        if tensors is None:
            flat = to_device(torch.tensor([h for _, indices in checked for h in indices], dtype=torch.long), device)
            tensors, start = {}, 0
            for layer, indices in checked:
                tensors[layer] = flat[start : start + len(indices)]
                start += len(indices)
            if len(self._head_tensors) >= _HEAD_TENSOR_SETS:
                self._head_tensors.clear()
            self._head_tensors[key] = tensors
        return dict(tensors)

    @torch.inference_mode()
    def suffix_attention(
        self,
        prefix_ids: Sequence[int],
        suffixes: Sequence[Sequence[int]],
        *,
        rows: Sequence[tuple[int, int]],
        heads: HeadSet,
    ) -> list[torch.Tensor]:
        """Prefill ``prefix_ids`` once, run every suffix over that cache in one batch, and
        return per suffix the attention of its ``rows`` (positions within the suffix) onto the
        prefix tokens: float32 (selected heads in layer order, rows, len(prefix_ids)).
        """
        if len(suffixes) != len(rows):
            raise ValueError("one (start, end) row range is needed per suffix")
        for suffix, (start, end) in zip(suffixes, rows):
            if not 0 <= start < end <= len(suffix):
                raise ValueError(f"row range {(start, end)} is outside a suffix of {len(suffix)} tokens")
        head_index = self.validate_heads(heads)
        last_layer = max(head_index)
        cache = DynamicCache(config=self.model.config)
        prefix = torch.tensor([list(prefix_ids)], dtype=torch.long, device=self.device)
        with self._session(_CaptureSession(heads=head_index, stop_after_layer=last_layer)):
            self._run(prefix, cache)
        cache.batch_repeat_interleave(len(suffixes))
        width = max(len(s) for s in suffixes)
        pad = int(self.model.config.pad_token_id or 0)
        # Right padding: pads sit after every captured row, so under the causal mask they
        # change nothing that is read.
        batch = torch.tensor([list(s) + [pad] * (width - len(s)) for s in suffixes], device=self.device)
        session = _CaptureSession(heads=head_index, stop_after_layer=last_layer, rows=list(rows))
        with self._session(session):
            self._run(batch, cache)
        prefix_len = len(prefix_ids)
        layers = sorted(head_index)
        return [
            torch.cat([session.captured[layer][element] for layer in layers], dim=0)[..., :prefix_len]
            for element in range(len(suffixes))
        ]

    def mean_suffix_attention_many(
        self,
        prefixes: Sequence[Sequence[int]],
        suffixes: Sequence[Sequence[Sequence[int]]],
        *,
        rows: Sequence[Sequence[tuple[int, int]]],
        heads: HeadSet,
    ) -> list[list[torch.Tensor]]:
        """``suffix_attention_batch``, split per prompt and suffix: float32 (selected heads in
        layer order, len(prefix)) each, views into one tensor on the model's device."""
        captured = self.suffix_attention_batch(prefixes, suffixes, rows=rows, heads=heads)
        return [
            [captured[element, which, :, : len(prefix)] for which in range(captured.shape[1])]
            for element, prefix in enumerate(prefixes)
        ]

    @torch.inference_mode()
    def suffix_attention_batch(
        self,
        prefixes: Sequence[Sequence[int]],
        suffixes: Sequence[Sequence[Sequence[int]]],
        *,
        rows: Sequence[Sequence[tuple[int, int]]],
        heads: HeadSet,
        packed: bool | None = None,
    ) -> torch.Tensor:
        """``suffix_attention`` for many prompts at once, averaged over each suffix's rows.

        Every prefix gets the same number of suffixes. Each prompt's first suffix continues its
        prefix in one right-padded, causal prefix pass (under the causal mask no real token
        sees a pad or a later token, and no position moves), and its rows are read there; the
        other suffixes, packed into one sequence per prompt under a block mask that hides the
        first suffix (``ragfocus.engine.packing``), run as a second batch over that cache. Only
        the rows read are captured. Returns float32 (prompts, suffixes, selected heads in layer
        order, longest prefix rounded up to 64) on the model's device: per prompt and suffix
        the mean over the suffix's ``rows`` of the attention onto the prefix, 0 past the
        prompt's own prefix. Equal, up to floating-point rounding, to
        ``suffix_attention(...)[i].mean(dim=1)`` for each prompt alone.

        Memory beyond the model (``docs/gpu.md``): the KV cache, 2 x layers x kv_heads x
        head_dim x prompts x (width of prefix and first suffix + packed width of the others)
        values, allocated once for both passes (``ragfocus.engine.append_cache``), and per layer read, about
        three float32 tensors of prompts x heads read in that layer x rows read x that width.

        ``packed`` (the default for a model that ``can_pack``, except on CUDA in float32) runs
        the batch as one pass instead, every prompt and all its suffixes packed end to end with
        no padding and no cache (``_packed_suffix_attention``; FlashAttention's varlen kernel on
        CUDA, one SDPA call per segment elsewhere); the result is the same up to rounding.
        ``rank_many`` on an H100 1.17-1.20x without distraction, 1.16-1.30x with it; on a
        2-core CPU 1.16-1.22x with distraction (``docs/gpu.md``).
        """
        if not prefixes:
            return torch.zeros((0, 0, 0, 0), device=self.device)
        count = len(suffixes[0])
        if len(suffixes) != len(prefixes) or len(rows) != len(prefixes):
            raise ValueError("one list of suffixes and one of row ranges are needed per prefix")
        if count == 0 or any(len(group) != count for group in suffixes) or any(len(r) != count for r in rows):
            raise ValueError("every prefix needs the same number (at least one) of suffixes and row ranges")
        if any(len(prefix) == 0 for prefix in prefixes):
            raise ValueError("a prefix is empty")
        for group, ranges in zip(suffixes, rows):
            for suffix, (start, end) in zip(group, ranges):
                if not 0 <= start < end <= len(suffix):
                    raise ValueError(f"row range {(start, end)} is outside a suffix of {len(suffix)} tokens")
        head_index = self.validate_heads(heads)
        last_layer = max(head_index)
        layers = sorted(head_index)
        device = self.device
        lengths = [len(prefix) for prefix in prefixes]
        width = padded_width(max(lengths))
        if packed is None:  # on CUDA only where the varlen kernel runs; SDPA per segment in float32 there is untried
            config = self.model.config
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            packed = device.type != "cuda" or flash_varlen_runs(device, next(self.model.parameters()).dtype, int(head_dim))
        if packed and can_pack(self.model):
            return self._packed_suffix_attention(prefixes, suffixes, rows, head_index, width)
        pad = int(self.model.config.pad_token_id or 0)
        # One copy to the device per tensor, before any layer runs.
        input_ids, first = continue_prefixes(prefixes, [group[0] for group in suffixes], [r[0] for r in rows], pad_id=pad)
        first = first.to(device)
        input_ids = to_device(input_ids, device)
        run_width = input_ids.shape[1]
        packed = None
        if count > 1:
            packed = pack_suffixes(lengths, run_width, [group[1:] for group in suffixes], [r[1:] for r in rows], pad_id=pad).to(device)
        cache = append_in_place_cache(self.model.config, run_width + (0 if packed is None else packed.input_ids.shape[1]))
        positions = torch.arange(run_width, device=device)[None, :].expand(len(prefixes), -1)
        with batched_attention_kernels(device):
            # Right padding under the causal mask: no real token sees a pad, so the prefix pass
            # needs no padding mask and SDPA can take its causal flash kernel. The pads' and the
            # first suffixes' keys and values are masked in the packed pass.
            continued = _BatchedRows(first.row_index, first.row_weights, first.bias(run_width))
            with self._session(_CaptureSession(heads=head_index, stop_after_layer=last_layer, batched=continued)) as session:
                self._run(input_ids, cache, position_ids=positions)
            on_prefix = first.on_prefix(run_width)
            parts = [torch.cat([session.captured[layer][0] for layer in layers], dim=2).mul_(on_prefix)[..., :width]]
            if packed is not None:
                mask, bias = packed.masks()
                session = _CaptureSession(
                    heads=head_index, stop_after_layer=last_layer,
                    batched=_BatchedRows(packed.row_index, packed.row_weights, bias), masked_suffixes=True,
                )
                with self._session(session):
                    self._run(packed.input_ids, cache, attention_mask=mask, position_ids=packed.position_ids)
                parts.append(torch.cat([session.captured[layer][0] for layer in layers], dim=2)[..., :width])
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def _packed_suffix_attention(
        self,
        prefixes: Sequence[Sequence[int]],
        suffixes: Sequence[Sequence[Sequence[int]]],
        rows: Sequence[Sequence[tuple[int, int]]],
        head_index: dict[int, torch.Tensor],
        width: int,
    ) -> torch.Tensor:
        """``suffix_attention_batch`` as one pass over a packed row (``packing.pack_prompts``,
        ``varlen.keyed_row``): no pad is computed and no cache is kept; a further suffix reads
        its prompt's prefix keys, gathered in front of its own in every layer."""
        device = self.device
        packed = pack_prompts(prefixes, suffixes, rows)
        row = keyed_row(packed.lengths, packed.key_index, device)
        moved = packed.to(device)
        keyed = _KeyedRows(moved.row_index, moved.key_window, moved.row_weights, moved.bias())
        session = _CaptureSession(heads=head_index, stop_after_layer=max(head_index), keyed=keyed)
        with batched_attention_kernels(device), packed_prompts(row), self._session(session):
            self._run(moved.input_ids, None, position_ids=moved.position_ids, attention_mask=UNUSED_MASK)
        captured = torch.cat([session.captured[layer][0] for layer in sorted(head_index)], dim=2)[..., :width]
        return captured.mul_(moved.on_prefix(width))

    @torch.inference_mode()
    def greedy_decode(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        heads: HeadSet,
        stop_ids: Sequence[int] = (),
    ) -> list[DecodeStep]:
        """Generate greedily from ``prompt_ids`` and keep, for every generated token, the
        attention row of the position that chose it, for ``heads``.

        This is what the retrieval score of Wu et al. ("Retrieval Head Mechanistically
        Explains Long-Context Factuality", ICLR 2025) reads: which position each head attends
        to most while a token is being copied. Every layer runs (the logits are needed).
        """
        if not prompt_ids:
            raise ValueError("prompt_ids is empty")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        head_index = self.validate_heads(heads)
        layers = sorted(head_index)
        stops = {int(token) for token in stop_ids}
        cache = DynamicCache(config=self.model.config)
        input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
        row = (len(prompt_ids) - 1, len(prompt_ids))
        steps: list[DecodeStep] = []
        for _ in range(max_new_tokens):
            session = _CaptureSession(heads=head_index, stop_after_layer=self.num_layers, rows=[row])
            with self._session(session):
                output = self.model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            token = int(output.logits[0, -1].argmax())
            attention = torch.cat([session.captured[layer][0] for layer in layers], dim=0)[:, 0, :]
            steps.append(DecodeStep(token=token, attention=attention))
            if token in stops:
                break
            input_ids = torch.tensor([[token]], dtype=torch.long, device=self.device)
            row = (0, 1)
        return steps

    def _run(self, input_ids: torch.Tensor, cache: DynamicCache | None, **inputs: torch.Tensor) -> None:
        try:
            self.model.base_model(input_ids=input_ids, past_key_values=cache, use_cache=cache is not None, **inputs)
        except _StopForward:
            return
        raise RuntimeError(
            "The forward pass never reached the capturing attention; the model's attention does not "
            "go through transformers' attention interface, so ragfocus cannot read it."
        )

    @staticmethod
    @contextmanager
    def _session(session: _CaptureSession) -> Iterator[_CaptureSession]:
        token = _ACTIVE.set(session)
        try:
            yield session
        finally:
            _ACTIVE.reset(token)
