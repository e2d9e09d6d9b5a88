"""Capture the attention rows of chosen query tokens, for chosen heads only.

This is the engine behind retrieval-head ranking (ICR: Chen et al., "Attention in Large
Language Models Yields Efficient Zero-Shot Re-Rankers", ICLR 2025): the prompt's shared
prefix (instruction and passages) is prefilled once with the KV cache kept; the query
suffix and a content-free ("N/A") suffix then run together as one small batch over that
cache, and only their query rows of attention are computed, for only the layers and heads
asked for. The forward pass stops after the last layer needed.

Everything goes through transformers' public attention interface (``ragfocus.engine.hook``),
which recomputes ``softmax(q k^T * scale + mask)`` for the selected rows and heads from the
post-RoPE queries and keys it is handed (``ragfocus.engine.row_attention``). Grouped-query
attention is handled by mapping each query head to its key/value head.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache

from ragfocus.engine.append_cache import append_in_place_cache
from ragfocus.engine.hook import (
    CAPTURE_IMPLEMENTATION,
    CaptureSession,
    StopForward,
    after_cached_prefix,
    can_pack,
    capturing,
    register_capture_attention,
    require_capture_attention,
)
from ragfocus.engine.kernels import batched_attention_kernels, padded_width, to_device
from ragfocus.engine.packing import continue_prefixes, pack_prompts, pack_suffixes
from ragfocus.engine.row_attention import (
    BatchedRows,
    KeyedRows,
    grouped_query_attention,
    keyed_row_attention,
    lower_right_causal_attention,
    packed_row_attention,
    query_row_attention,
)
from ragfocus.engine.varlen import UNUSED_MASK, flash_varlen_runs, keyed_row, packed_prompts

__all__ = [
    "CAPTURE_IMPLEMENTATION",
    "AttentionEngine",
    "DecodeStep",
    "HeadSet",
    "after_cached_prefix",
    "can_pack",
    "grouped_query_attention",
    "keyed_row_attention",
    "lower_right_causal_attention",
    "packed_row_attention",
    "query_row_attention",
    "register_capture_attention",
    "require_capture_attention",
]

logger = logging.getLogger(__name__)

HeadSet = Mapping[int, Sequence[int]]
"""Heads to read: layer index -> head indices (both counted from 0)."""

_HEAD_TENSOR_SETS = 64
"""How many head sets' index tensors an engine keeps (a Focuser uses three or four)."""


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
        with capturing(CaptureSession(heads=head_index, stop_after_layer=last_layer)):
            self._run(prefix, cache)
        cache.batch_repeat_interleave(len(suffixes))
        width = max(len(s) for s in suffixes)
        pad = int(self.model.config.pad_token_id or 0)
        # Right padding: pads sit after every captured row, so under the causal mask they
        # change nothing that is read.
        batch = torch.tensor([list(s) + [pad] * (width - len(s)) for s in suffixes], device=self.device)
        session = CaptureSession(heads=head_index, stop_after_layer=last_layer, rows=list(rows))
        with capturing(session):
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
        ``rank_many`` measured faster packed, on a GPU with and without distraction and on a
        CPU with distraction (figures in ``docs/gpu.md``).
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
            continued = BatchedRows(first.row_index, first.row_weights, first.bias(run_width))
            with capturing(CaptureSession(heads=head_index, stop_after_layer=last_layer, batched=continued)) as session:
                self._run(input_ids, cache, position_ids=positions)
            on_prefix = first.on_prefix(run_width)
            parts = [torch.cat([session.captured[layer][0] for layer in layers], dim=2).mul_(on_prefix)[..., :width]]
            if packed is not None:
                mask, bias = packed.masks()
                session = CaptureSession(
                    heads=head_index, stop_after_layer=last_layer,
                    batched=BatchedRows(packed.row_index, packed.row_weights, bias), masked_suffixes=True,
                )
                with capturing(session):
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
        keyed = KeyedRows(moved.row_index, moved.key_window, moved.row_weights, moved.bias())
        session = CaptureSession(heads=head_index, stop_after_layer=max(head_index), keyed=keyed)
        with batched_attention_kernels(device), packed_prompts(row), capturing(session):
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
            session = CaptureSession(heads=head_index, stop_after_layer=self.num_layers, rows=[row])
            with capturing(session):
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
        except StopForward:
            return
        raise RuntimeError(
            "The forward pass never reached the capturing attention; the model's attention does not "
            "go through transformers' attention interface, so ragfocus cannot read it."
        )
