"""The attention hook: how ragfocus reads attention through transformers' public interface.

A function registered with ``AttentionInterface`` (``register_capture_attention``) runs in
place of SDPA in every layer. It owns the hook's modes, each set for the current thread by a
``ContextVar`` and nothing else:

- **capture** (``capturing(session)``): the layers in ``CaptureSession.heads`` compute the
  attention rows the session asks for (``ragfocus.engine.row_attention``) and keep them in
  ``CaptureSession.captured``; the layer ``stop_after_layer`` raises ``StopForward`` so the
  rest of the network never runs;
- **after a cached prefix** (``after_cached_prefix``): causal attention aligned to the lower
  right, no mask built;
- **packed prompts** (``ragfocus.engine.varlen.packed_prompts``): many prompts in one row,
  each attending only to itself;
- otherwise plain SDPA, as transformers would run it.

No model file is forked and no private cache field is read.
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
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ragfocus.engine.row_attention import (
    BatchedRows,
    KeyedRows,
    grouped_query_attention,
    keyed_row_attention,
    lower_right_causal_attention,
    packed_row_attention,
    query_row_attention,
)
from ragfocus.engine.varlen import active_packed_row, packed_causal_attention

CAPTURE_IMPLEMENTATION = "ragfocus_capture"
"""Name under which the capturing attention is registered with transformers."""

_REGISTER_LOCK = threading.Lock()
_registered = False


class StopForward(Exception):
    """Raised inside the last layer needed, to skip the rest of the network."""


@dataclass
class CaptureSession:
    heads: dict[int, torch.Tensor]
    stop_after_layer: int
    rows: Sequence[tuple[int, int]] | None = None
    """Per batch element, the [start, end) positions of the query rows in this forward."""
    batched: BatchedRows | None = None
    """The rows of a batched capture, read with ``packed_row_attention``."""
    keyed: KeyedRows | None = None
    """The rows of a capture over a packed row, read with ``keyed_row_attention``."""
    masked_suffixes: bool = False
    """A packed suffix pass: its masked attention folds grouped-query heads
    (``grouped_query_attention``) instead of repeating the keys and values per query head."""
    captured: dict[int, list[torch.Tensor]] = field(default_factory=dict)


_ACTIVE: ContextVar[CaptureSession | None] = ContextVar("ragfocus_capture_session", default=None)
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


@contextmanager
def capturing(session: CaptureSession) -> Iterator[CaptureSession]:
    """Capture in this thread, as ``session`` says, until the block ends."""
    token = _ACTIVE.set(session)
    try:
        yield session
    finally:
        _ACTIVE.reset(token)


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
        raise StopForward
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
