"""The passes that score distraction prompts: log P of the teacher-forced abstain answer.

How the prompts of a batch are run (``ragfocus.scoring.distraction`` says what is scored and
why): length-sorted, right-padded chunks (``length_chunks``), or packed end to end with no
padding (``packed_chunks``, ``packed_logprobs``; ``ragfocus.engine.varlen``), after the first
tokens every prompt shares, run once (``shared_prefix``): causal attention makes a prefix's
keys and values independent of what follows, so only rounding changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache

from ragfocus.engine.append_cache import AppendInPlaceLayer, append_in_place_cache
from ragfocus.engine.capture import after_cached_prefix, require_capture_attention
from ragfocus.engine.kernels import padded_width, to_device
from ragfocus.engine.varlen import UNUSED_MASK, packed_ids, packed_positions, packed_prompts, packed_row

LENGTH_RATIO = 1.3
"""``length_chunks``: a chunk's longest padded prompt is at most this many times its shortest."""

CHUNK_TOKENS = 65_536
"""``length_chunks``: at most this many padded tokens per pass (the pass's memory grows with it)."""

PACKED_TOKENS = 131_072
"""A packed pass (``packed_chunks``) holds at most this many tokens (its memory grows with them)."""

MIN_SHARED_PREFIX = 8
"""Prompts share their common first tokens' keys and values when there are at least this many."""


def length_chunks(
    lengths: Sequence[int],
    *,
    max_prompts: int,
    multiple: int = 1,
    ratio: float = LENGTH_RATIO,
    max_tokens: float = CHUNK_TOKENS,
) -> list[list[int]]:
    """The indices of ``lengths``, shortest first, cut into the chunks one right-padded pass
    each runs: a chunk ends before ``max_prompts`` are exceeded, before a prompt whose padded
    width (rounded up to ``multiple``) is more than ``ratio`` times the chunk's first, and
    before the chunk's padded tokens exceed ``max_tokens`` (a longer prompt runs alone).
    With ``ratio`` and ``max_tokens`` infinite the chunks are the sorted prompts,
    ``max_prompts`` at a time.

    Passage lengths vary widely (HotpotQA: 97 to 2,049 tokens after the shared prefix), so
    fixed-size chunks of sorted prompts padded every chunk to its outliers: 2.05 padded tokens
    per real one for the 640 prompts of a batch of 64 questions in chunks of 256, 1.27 with
    this cut (HotpotQA dev 0-1023, widths rounded to 64); one query's ten prompts padded to
    the longest, 1.79, and 1.08 with this cut (dev 0-299, no rounding).
    """
    if max_prompts < 1:
        raise ValueError(f"max_prompts must be at least 1, got {max_prompts}")
    chunks: list[list[int]] = []
    current: list[int] = []
    first_width = 0
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        width = padded_width(lengths[index], multiple)
        if current and (len(current) >= max_prompts or width > ratio * first_width or (len(current) + 1) * width > max_tokens):
            chunks.append(current)
            current = []
        if not current:
            first_width = width
        current.append(index)
    if current:
        chunks.append(current)
    return chunks


@dataclass(frozen=True)
class SharedPrefix:
    """The keys and values of the first tokens every prompt of a batch shares, computed once
    (batch of one) and copied in front of each prompt's own."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    """Per layer, keys and values: (1, key-value heads, len(ids), head dim)."""

    def cache(self, model: torch.nn.Module, batch: int, width: int) -> DynamicCache:
        """A KV cache holding the prefix for ``batch`` prompts, with room for ``width`` more
        positions each."""
        cache = append_in_place_cache(model.config, len(self.ids) + width)
        for layer, (keys, values) in enumerate(self.layers):
            cache.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1), layer)
        return cache


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many first tokens all ``sequences`` have in common."""
    if not sequences:
        return 0
    shortest = min(len(sequence) for sequence in sequences)
    first = sequences[0]
    for position in range(shortest):
        token = first[position]
        if any(sequence[position] != token for sequence in sequences):
            return position
    return shortest


@torch.inference_mode()
def shared_prefix(model: torch.nn.Module, sequences: Sequence[Sequence[int]], *, keep: int) -> SharedPrefix | None:
    """The common first tokens of ``sequences`` run through ``model`` once, leaving at least
    ``keep`` tokens of every sequence to run after them; ``None`` when fewer than
    ``MIN_SHARED_PREFIX`` tokens are shared, there is one sequence only, or the model's cache
    layers are not all full attention (a sliding window would crop the prefix)."""
    if len(sequences) < 2:
        return None
    length = min(common_prefix_length(sequences), min(len(sequence) for sequence in sequences) - keep)
    if length < MIN_SHARED_PREFIX:
        return None
    cache = append_in_place_cache(model.config, length)
    layers = [layer for layer in getattr(cache, "layers", []) if isinstance(layer, AppendInPlaceLayer)]
    if not layers or len(layers) != len(cache.layers):
        return None
    device = next(model.parameters()).device
    ids = list(sequences[0][:length])
    model.base_model(input_ids=to_device(torch.tensor([ids]), device), past_key_values=cache, use_cache=True)
    computed = [(layer.keys, layer.values) for layer in layers if layer.keys is not None and layer.values is not None]
    return SharedPrefix(ids, computed) if len(computed) == len(layers) else None


def sequence_logprobs(
    model: torch.nn.Module,
    sequences: Sequence[list[int]],
    answer_length: int,
    *,
    pad_multiple: int = 1,
    prefix: SharedPrefix | None = None,
) -> torch.Tensor:
    """log P of each sequence's last ``answer_length`` tokens given the rest: float64
    (sequences,) on the model's device.

    The sequences run as one right-padded batch, its width rounded up to ``pad_multiple``:
    under the causal mask no real token sees a pad and every position stays where it is, so
    no padding mask is needed and SDPA can take its causal flash kernel. Only the hidden states
    that predict the answer tokens go through the LM head. With a ``prefix`` (every sequence
    starts with its ids), only the rest of each sequence runs, after the prefix's cached keys
    and values.
    """
    device = next(model.parameters()).device
    skipped = _prefix_length(sequences, prefix)
    sequences = [sequence[skipped:] for sequence in sequences]
    width = padded_width(max(len(sequence) for sequence in sequences), pad_multiple)
    pad = int(getattr(model.config, "pad_token_id", None) or 0)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    # Per row, the positions whose next-token logits score the answer tokens, and those tokens.
    predicting = torch.zeros((len(sequences), answer_length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence)
        predicting[row] = torch.arange(len(sequence) - answer_length - 1, len(sequence) - 1)
    targets = ids.gather(1, predicting + 1)
    ids, predicting, targets = (to_device(tensor, device) for tensor in (ids, predicting, targets))
    positions = torch.arange(skipped, skipped + width, device=device)[None, :].expand(len(sequences), -1)
    if prefix is None:
        hidden = model.base_model(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state
    else:
        cache = prefix.cache(model, len(sequences), width)
        with after_cached_prefix():
            hidden = model.base_model(input_ids=ids, position_ids=positions, past_key_values=cache, use_cache=True).last_hidden_state
    picked = hidden.gather(1, predicting[..., None].expand(-1, -1, hidden.shape[-1]))
    return _answer_logprobs(model, picked, targets)


def packed_logprobs(
    model: torch.nn.Module,
    sequences: Sequence[list[int]],
    answer_length: int,
    *,
    prefix: SharedPrefix | None = None,
) -> torch.Tensor:
    """``sequence_logprobs`` with the sequences packed end to end in one row instead of
    right-padded (``ragfocus.engine.varlen``): no pad is computed. Each sequence keeps its own
    positions and attends only to itself (and to the ``prefix``'s cached keys and values)."""
    require_capture_attention(model)
    device = next(model.parameters()).device
    skipped = _prefix_length(sequences, prefix)
    lengths = [len(sequence) - skipped for sequence in sequences]
    if min(lengths) <= answer_length:
        raise ValueError(f"every sequence needs a prompt before its {answer_length} answer tokens, after the shared prefix")
    row = packed_row(lengths, device, prefix=None if prefix is None else prefix.layers)
    ids = packed_ids(sequences, skip=skipped)
    ends = torch.tensor(lengths).cumsum(0)
    # Per sequence, the row positions whose next-token logits score the answer tokens.
    predicting = ends[:, None] - answer_length - 1 + torch.arange(answer_length)[None, :]
    targets = ids[0, predicting + 1]
    ids, predicting, targets, positions = (
        to_device(tensor, device) for tensor in (ids, predicting, targets, packed_positions(row))
    )
    with packed_prompts(row):
        hidden = model.base_model(
            input_ids=ids, position_ids=positions, attention_mask=UNUSED_MASK, use_cache=False
        ).last_hidden_state
    picked = hidden[0, predicting]
    return _answer_logprobs(model, picked, targets)


def packed_chunks(lengths: Sequence[int], *, max_prompts: int, max_tokens: int = PACKED_TOKENS) -> list[list[int]]:
    """The indices of ``lengths``, in order, cut into packed passes of at most ``max_prompts``
    prompts and ``max_tokens`` tokens (a longer prompt runs alone)."""
    if max_prompts < 1:
        raise ValueError(f"max_prompts must be at least 1, got {max_prompts}")
    chunks: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for index, length in enumerate(lengths):
        if current and (len(current) >= max_prompts or tokens + length > max_tokens):
            chunks.append(current)
            current, tokens = [], 0
        current.append(index)
        tokens += length
    if current:
        chunks.append(current)
    return chunks


def _prefix_length(sequences: Sequence[list[int]], prefix: SharedPrefix | None) -> int:
    """How many first tokens of every sequence ``prefix`` covers (0 without one); raises if a
    sequence does not start with its ids."""
    if prefix is None:
        return 0
    skipped = len(prefix.ids)
    if any(sequence[:skipped] != prefix.ids for sequence in sequences):
        raise ValueError("every sequence must start with the shared prefix's ids")
    return skipped


def _answer_logprobs(model: torch.nn.Module, picked: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log P of each sequence's answer, float64 (sequences,), from the hidden states that
    predict its tokens (sequences, answer length, hidden) and the tokens (sequences, answer length)."""
    logits = _float32_logits(model.get_output_embeddings(), picked)
    chosen = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
    return chosen.sum(dim=1).double()


def _float32_logits(head: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head applied in float32 to the few hidden states read.

    In bf16 a logit near 20 is rounded to a multiple of 0.125, which moves a log-probability
    by as much; the float32 product over a handful of positions costs next to nothing.
    """
    weight = getattr(head, "weight", None)
    if not isinstance(head, torch.nn.Linear) or weight is None:
        return head(hidden).float()
    bias = None if head.bias is None else head.bias.float()
    return torch.nn.functional.linear(hidden.float(), weight.float(), bias)
