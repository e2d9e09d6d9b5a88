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

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ragfocus.engine.kernels import batched_attention_kernels, padded_width

CAPTURE_IMPLEMENTATION = "ragfocus_capture"
"""Name under which the capturing attention is registered with transformers."""

HeadSet = Mapping[int, Sequence[int]]
"""Heads to read: layer index -> head indices (both counted from 0)."""

_REGISTER_LOCK = threading.Lock()
_registered = False


class _StopForward(Exception):
    """Raised inside the last layer needed, to skip the rest of the network."""


@dataclass
class _CaptureSession:
    heads: dict[int, torch.Tensor]
    stop_after_layer: int
    rows: Sequence[tuple[int, int]] | None = None
    """Per batch element, the [start, end) positions of the query rows in this forward."""
    row_weights: torch.Tensor | None = None
    """(batch, positions) weights of the query rows: the batched capture keeps, per element
    and head, the weighted sum of its rows' attention (a mean over the rows asked for)."""
    captured: dict[int, list[torch.Tensor]] = field(default_factory=dict)


_ACTIVE: ContextVar[_CaptureSession | None] = ContextVar("ragfocus_capture_session", default=None)


def register_capture_attention() -> None:
    """Register the capturing attention (and SDPA's mask builder) with transformers, once."""
    global _registered
    with _REGISTER_LOCK:
        if not _registered:
            AttentionInterface.register(CAPTURE_IMPLEMENTATION, _capturing_attention)
            AttentionMaskInterface.register(CAPTURE_IMPLEMENTATION, sdpa_mask)
            _registered = True


def _capturing_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    session = _ACTIVE.get()
    if session is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    layer = int(module.layer_idx)
    if session.row_weights is not None and layer in session.heads:
        session.captured[layer] = [
            weighted_row_attention(
                query, key, attention_mask,
                weights=session.row_weights,
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
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


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


def weighted_row_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    weights: torch.Tensor,
    heads: torch.Tensor,
    scaling: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """Per batch element and query head in ``heads``, the attention of every key position,
    summed over the query positions with ``weights`` (batch, q_len): float32 (batch,
    len(heads), k_len). The whole batch in a few tensor operations, with no host-device
    synchronisation; the causal mask is by position, the padding mask from ``attention_mask``.
    """
    batch, query_heads, q_len, dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    groups = query_heads // kv_heads
    # Each key/value head is converted to float32 once and shared by its query heads (no
    # gather that would copy it once per query head); the heads not asked for are dropped after.
    q = (query.float() * scaling).reshape(batch, kv_heads, groups * q_len, dim)  # scale the few query rows
    k = key.float()
    scores = torch.matmul(q, k.transpose(-1, -2)).view(batch, query_heads, q_len, k_len)
    if len(heads) < query_heads:
        scores = scores[:, heads]
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    positions = torch.arange(q_len, device=query.device) + (k_len - q_len)
    allowed = (torch.arange(k_len, device=query.device)[None, :] <= positions[:, None])[None, None]
    if attention_mask is not None:
        window = attention_mask[:, :, :, :k_len]
        allowed = allowed & (window if window.dtype == torch.bool else window > torch.finfo(window.dtype).min / 2)
    probabilities = torch.softmax(scores.masked_fill_(~allowed, float("-inf")), dim=-1)
    # A row that sees no key (a padding row) is NaN after the softmax and weighs nothing.
    probabilities.nan_to_num_(0.0)
    return torch.einsum("bhqk,bq->bhk", probabilities, weights)


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

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def validate_heads(self, heads: HeadSet) -> dict[int, torch.Tensor]:
        """Check layer/head indices against the model and turn them into index tensors."""
        if not heads:
            raise ValueError("heads is empty: name at least one (layer, head) to read")
        checked: dict[int, torch.Tensor] = {}
        for layer, layer_heads in sorted(heads.items()):
            if not 0 <= int(layer) < self.num_layers:
                raise ValueError(f"layer {layer} is out of range: the model has layers 0-{self.num_layers - 1}")
            indices = sorted({int(h) for h in layer_heads})
            if not indices or indices[0] < 0 or indices[-1] >= self.num_heads:
                raise ValueError(f"heads {list(layer_heads)} of layer {layer} are out of range 0-{self.num_heads - 1}")
            checked[int(layer)] = torch.tensor(indices, dtype=torch.long, device=self.device)
        return checked

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

    @torch.inference_mode()
    def mean_suffix_attention_many(
        self,
        prefixes: Sequence[Sequence[int]],
        suffixes: Sequence[Sequence[Sequence[int]]],
        *,
        rows: Sequence[Sequence[tuple[int, int]]],
        heads: HeadSet,
    ) -> list[list[torch.Tensor]]:
        """``suffix_attention`` for many prompts at once, averaged over each suffix's rows.

        Every prefix gets the same number of suffixes. The prefixes run as one right-padded
        batch (under the causal mask no real token sees a pad, and no position moves); then all their
        suffixes run as a second batch over that cache, each with the positions that follow
        its own prefix. Per prefix and suffix it returns the mean over the suffix's ``rows``
        of the attention onto the prefix: float32 (selected heads in layer order,
        len(prefix)), on the model's device. Equal, up to floating-point rounding, to
        ``suffix_attention(...)[i].mean(dim=1)`` for each prompt alone.

        Memory beyond the model: the KV cache, 2 x layers x kv_heads x head_dim x
        (len(prefixes) x suffixes) x (longest prefix + longest suffix) values, and per layer
        read, three float32 tensors of len(prefixes) x suffixes x heads read in that layer x
        longest suffix x (longest prefix + longest suffix).
        """
        if not prefixes:
            return []
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
        device = self.device
        pad = int(self.model.config.pad_token_id or 0)
        lengths = [len(prefix) for prefix in prefixes]
        longest = padded_width(max(lengths))
        prefix_ids = torch.full((len(prefixes), longest), pad, dtype=torch.long)
        prefix_mask = torch.zeros((len(prefixes), longest), dtype=torch.long)
        for element, prefix in enumerate(prefixes):
            prefix_ids[element, : len(prefix)] = torch.tensor(list(prefix), dtype=torch.long)
            prefix_mask[element, : len(prefix)] = 1
        flat = [suffix for group in suffixes for suffix in group]
        flat_rows = [pair for ranges in rows for pair in ranges]
        width = padded_width(max(len(suffix) for suffix in flat), 16)
        suffix_ids = torch.full((len(flat), width), pad, dtype=torch.long)
        suffix_mask = torch.zeros((len(flat), width), dtype=torch.long)
        weights = torch.zeros((len(flat), width), dtype=torch.float32)
        for element, (suffix, (start, end)) in enumerate(zip(flat, flat_rows)):
            suffix_ids[element, : len(suffix)] = torch.tensor(list(suffix), dtype=torch.long)
            suffix_mask[element, : len(suffix)] = 1
            weights[element, start:end] = 1.0 / (end - start)
        starts = torch.tensor(lengths, dtype=torch.long).repeat_interleave(count)
        suffix_positions = starts[:, None] + torch.arange(width)[None, :]
        full_mask = torch.cat([prefix_mask.repeat_interleave(count, dim=0), suffix_mask], dim=1)
        # One copy to the device per tensor, before any layer runs.
        prefix_ids, suffix_ids, full_mask, suffix_positions, weights = (
            t.to(device, non_blocking=True) for t in (prefix_ids, suffix_ids, full_mask, suffix_positions, weights)
        )
        cache = DynamicCache(config=self.model.config)
        positions = torch.arange(longest, device=device)[None, :].expand(len(prefixes), -1)
        with batched_attention_kernels(device):
            # Right padding under the causal mask: no real token sees a pad, so the prefix pass
            # needs no padding mask and SDPA can take its causal flash kernel. The pads' keys
            # and values are masked in the suffix pass.
            with self._session(_CaptureSession(heads=head_index, stop_after_layer=last_layer)):
                self._run(prefix_ids, cache, position_ids=positions)
            if count > 1:
                cache.batch_repeat_interleave(count)
            session = _CaptureSession(heads=head_index, stop_after_layer=last_layer, row_weights=weights)
            with self._session(session):
                self._run(suffix_ids, cache, attention_mask=full_mask, position_ids=suffix_positions)
        captured = torch.cat([session.captured[layer][0] for layer in sorted(head_index)], dim=1)
        return [
            [captured[element * count + which, :, : lengths[element]] for which in range(count)]
            for element in range(len(prefixes))
        ]

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

    def _run(self, input_ids: torch.Tensor, cache: DynamicCache, **inputs: torch.Tensor) -> None:
        try:
            self.model.base_model(input_ids=input_ids, past_key_values=cache, use_cache=True, **inputs)
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
