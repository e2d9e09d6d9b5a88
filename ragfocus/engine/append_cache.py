"""A KV cache that appends in place, for the batched capture's two passes.

``transformers``' ``DynamicLayer`` concatenates the new keys and values onto the cached ones
at every update, so the packed suffix pass (``ragfocus.engine.packing``) copied each layer's
whole prefix cache once more, a measurable share of each batch on a GPU (``docs/gpu.md``).
Here each layer writes into one buffer sized for both passes up front and hands back views of
it, so every key and value is written once.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class AppendInPlaceLayer(DynamicLayer):
    """A ``DynamicLayer`` that writes into a buffer of ``capacity`` positions and returns the
    filled part as a view; past the capacity, or for another batch shape, it concatenates as
    ``DynamicLayer`` does."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:  # what DynamicLayer.lazy_initialization sets, whose signature varies in 5.x
            self.dtype, self.device = key_states.dtype, key_states.device
            self.keys = key_states.new_empty((0,))
            self.values = value_states.new_empty((0,))
            self.is_initialized = True
            batch, heads, _, key_dim = key_states.shape
            self._key_buffer = key_states.new_empty((batch, heads, self.capacity, key_dim))
            self._value_buffer = value_states.new_empty((batch, value_states.shape[1], self.capacity, value_states.shape[-1]))
        start = self.keys.shape[-2] if self.keys is not None and self.keys.numel() else 0
        end = start + key_states.shape[-2]
        keys, values = self._key_buffer, self._value_buffer
        if keys is None or values is None or end > self.capacity or keys.shape[:2] != key_states.shape[:2] or values.shape[:2] != value_states.shape[:2]:
            return super().update(key_states, value_states, *args, **kwargs)
        keys[:, :, start:end].copy_(key_states)
        values[:, :, start:end].copy_(value_states)
        self.keys, self.values = keys[:, :, :end], values[:, :, :end]
        return self.keys, self.values


def append_in_place_cache(config: Any, capacity: int) -> DynamicCache:
    """``DynamicCache(config=config)`` whose layers append in place up to ``capacity``
    positions, when every layer is a plain ``DynamicLayer`` (full attention); otherwise (sliding
    windows, another ``transformers`` layout) the plain cache."""
    cache = DynamicCache(config=config)
    layers = getattr(cache, "layers", None)
    if isinstance(layers, list) and layers and all(type(layer) is DynamicLayer for layer in layers):
        cache.layers = [AppendInPlaceLayer(capacity) for _ in layers]
    return cache
