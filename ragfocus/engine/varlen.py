"""Causal attention over prompts packed end to end in one row, with no padding.

A batch of prompts of different lengths right-padded to its longest spends the matmuls of
every pad: the distraction prompts of a batch of HotpotQA questions, length-sorted in chunks
of 256, ran 2.05 padded tokens per real one (``ragfocus.scoring.distraction.length_chunks``).
Packed end to end into a single row, each prompt with its own positions, a pass computes only
real tokens; attention is kept inside each prompt by variable-length ("varlen") attention
over cumulative offsets, as FlashAttention-2 does (Dao, "FlashAttention-2: Faster Attention
with Better Parallelism and Work Partitioning", ICLR 2024). Every prompt may continue the
same cached prefix (``PackedRow.prefix``): its keys and values are laid in front of each
prompt's own, and the prompt attends to them and, causally, to itself. Or a prompt may attend
to chosen earlier tokens of the row itself (``keyed_row``): a calibration suffix of ICR sees
its own prompt's passages, laid once in the row before the query that also reads them.

On CUDA in half precision the varlen flash kernel runs (``torch.ops.aten._flash_attention_forward``,
the op behind ``torch.nn.attention.varlen``); elsewhere each prompt gets one SDPA call, the
same arithmetic, so a CPU runs and tests this path too.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.attention.bias import causal_lower_right

from ragfocus.engine.kernels import to_device

_FLASH_DTYPES = (torch.float16, torch.bfloat16)
_FLASH_MAX_HEAD_DIM = 256


@dataclass(frozen=True)
class PackedRow:
    """Where each prompt lies in a packed row (``packed_row``) and, if they all continue one,
    the cached prefix they continue."""

    lengths: list[int]
    """Per prompt, its tokens in the row."""
    tokens: int
    """The row's tokens, ``sum(lengths)``."""
    longest: int
    """The longest prompt's tokens, ``max(lengths)``."""
    prefix: Sequence[tuple[torch.Tensor, torch.Tensor]] | None
    """Per layer, the shared prefix's keys and values, (1, key-value heads, prefix, dim)."""
    query_offsets: torch.Tensor
    """int32 (prompts + 1,) on the device: where each prompt starts among the queries."""
    key_offsets: torch.Tensor
    """int32 (prompts + 1,): where each prompt's keys start once the prefix is laid before each."""
    key_index: torch.Tensor | None
    """With a prefix, (keys,): for each key position, its index in ``cat(prefix, row)``; in a
    ``keyed_row``, its index in the row; otherwise ``None`` (each prompt's keys are its own)."""
    key_lengths: list[int]
    """Per prompt, how many keys it attends to (the last ``lengths[i]`` of them causally)."""
    longest_keys: int
    """``max(key_lengths)``."""

    @property
    def prefix_length(self) -> int:
        return 0 if self.prefix is None else int(self.prefix[0][0].shape[-2])


def packed_row(
    lengths: Sequence[int],
    device: torch.device,
    *,
    prefix: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> PackedRow:
    """The offsets of prompts of ``lengths`` tokens packed end to end, each after ``prefix``
    (per layer, keys and values of shape (1, key-value heads, prefix, dim)) if given."""
    if not lengths or min(lengths) < 1:
        raise ValueError(f"a packed row needs at least one prompt and every prompt at least one token, got lengths {list(lengths)[:8]}")
    if prefix is not None and not prefix:
        raise ValueError("prefix must hold keys and values for every layer, got none")
    skipped = 0 if prefix is None else int(prefix[0][0].shape[-2])
    query_offsets = [0]
    key_offsets = [0]
    for length in lengths:
        query_offsets.append(query_offsets[-1] + length)
        key_offsets.append(key_offsets[-1] + skipped + length)
    key_index = None
    if prefix is not None:
        # cat(prefix, row): positions 0..skipped-1 are the prefix, the row follows. A prompt's
        # keys are the prefix, then its own tokens.
        starts = np.asarray(query_offsets[:-1], dtype=np.int64)
        owner = np.repeat(np.arange(len(lengths)), np.asarray(lengths, dtype=np.int64) + skipped)
        local = np.arange(key_offsets[-1], dtype=np.int64) - np.asarray(key_offsets[:-1], dtype=np.int64)[owner]
        key_index = to_device(torch.from_numpy(np.where(local < skipped, local, starts[owner] + local)), device)
    return PackedRow(
        lengths=list(lengths),
        tokens=query_offsets[-1],
        longest=max(lengths),
        prefix=prefix,
        query_offsets=to_device(torch.tensor(query_offsets, dtype=torch.int32), device),
        key_offsets=to_device(torch.tensor(key_offsets, dtype=torch.int32), device),
        key_index=key_index,
        key_lengths=[length + skipped for length in lengths],
        longest_keys=max(lengths) + skipped,
    )


def keyed_row(lengths: Sequence[int], key_index: Sequence[np.ndarray], device: torch.device) -> PackedRow:
    """A packed row whose prompt ``i`` (``lengths[i]`` tokens, in order) attends to the row
    positions ``key_index[i]``: any earlier tokens of the row, then its own ``lengths[i]``
    tokens, which it sees causally. Nothing is cached: the earlier tokens' keys and values are
    gathered in front of the prompt's own in every layer."""
    if not lengths or min(lengths) < 1 or len(key_index) != len(lengths):
        raise ValueError(f"a keyed row needs at least one prompt of at least one token and one key index per prompt, got lengths {list(lengths)[:8]}")
    query_offsets = np.concatenate([[0], np.cumsum(lengths)])
    key_lengths = [len(keys) for keys in key_index]
    for prompt, (length, keys) in enumerate(zip(lengths, key_index)):
        own = np.arange(query_offsets[prompt], query_offsets[prompt] + length)
        if len(keys) < length or not np.array_equal(np.asarray(keys[len(keys) - length :]), own) or np.any(np.asarray(keys) > own[-1]):
            raise ValueError(f"prompt {prompt}'s keys must end with its own {length} tokens and lie before them in the row")
    key_offsets = np.concatenate([[0], np.cumsum(key_lengths)])
    return PackedRow(
        lengths=list(lengths),
        tokens=int(query_offsets[-1]),
        longest=max(lengths),
        prefix=None,
        query_offsets=to_device(torch.from_numpy(query_offsets.astype(np.int32)), device),
        key_offsets=to_device(torch.from_numpy(key_offsets.astype(np.int32)), device),
        key_index=to_device(torch.from_numpy(np.concatenate(key_index).astype(np.int64)), device),
        key_lengths=key_lengths,
        longest_keys=max(key_lengths),
    )


def packed_ids(sequences: Sequence[Sequence[int]], *, skip: int = 0) -> torch.Tensor:
    """The token ids of ``sequences``, each without its first ``skip``, end to end: (1, tokens)
    long on the host (through numpy: a tenth of ``torch.tensor``'s time on a Python list)."""
    count = sum(len(sequence) - skip for sequence in sequences)
    flat = np.fromiter(itertools.chain.from_iterable(sequence[skip:] for sequence in sequences), dtype=np.int64, count=count)
    return torch.from_numpy(flat)[None, :]


def packed_positions(row: PackedRow) -> torch.Tensor:
    """Position ids of a packed row, (1, tokens): each prompt counts from the prefix's end."""
    lengths = np.asarray(row.lengths, dtype=np.int64)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return torch.from_numpy(np.arange(row.tokens, dtype=np.int64) - starts + row.prefix_length)[None, :]


UNUSED_MASK = torch.ones((1, 1, 1, 1), dtype=torch.bool)
"""The ``attention_mask`` to pass with a packed row: transformers hands a 4-D mask to the
attention as it is, without building one or inspecting the position ids (its check for packed
position ids makes the host wait for the GPU), and ``packed_causal_attention`` ignores it."""

_PACKED: ContextVar[PackedRow | None] = ContextVar("ragfocus_packed_row", default=None)


@contextmanager
def packed_prompts(row: PackedRow) -> Iterator[None]:
    """While active in this thread, the registered attention (``ragfocus.engine.capture``)
    treats its single batch row as ``row``'s packed prompts (``packed_causal_attention``) and
    no attention mask is built."""
    token = _PACKED.set(row)
    try:
        yield
    finally:
        _PACKED.reset(token)


def active_packed_row() -> PackedRow | None:
    """The ``PackedRow`` of the enclosing ``packed_prompts``, if any."""
    return _PACKED.get()


def packed_causal_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    row: PackedRow,
    *,
    layer: int,
    scaling: float | None,
) -> torch.Tensor:
    """Causal attention within each prompt of a packed row: ``query`` (1, heads, tokens, dim),
    ``key`` and ``value`` (1, key-value heads, tokens, dim), post-RoPE; each prompt also sees
    the whole shared prefix, if any, or the earlier tokens its ``keyed_row`` names. Returns (1, tokens, heads, dim) as transformers'
    attention functions do."""
    if query.shape[0] != 1 or query.shape[-2] != row.tokens:
        raise ValueError(f"a packed row is one batch row of {row.tokens} tokens, got queries of shape {tuple(query.shape)}")
    keys, values = key[0], value[0]
    if row.prefix is not None:
        prefix_keys, prefix_values = row.prefix[layer]
        keys = torch.cat([prefix_keys[0], keys], dim=1)
        values = torch.cat([prefix_values[0], values], dim=1)
    if row.key_index is not None:
        keys, values = keys.index_select(1, row.key_index), values.index_select(1, row.key_index)
    if flash_varlen_runs(query.device, query.dtype, query.shape[-1]):
        return _flash_varlen(query[0], keys, values, row, scaling=scaling)[None]
    return _per_prompt_attention(query[0], keys, values, row, scaling=scaling)[None]


def flash_varlen_runs(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """Whether ``packed_causal_attention`` runs FlashAttention's varlen kernel for queries on
    ``device`` in ``dtype`` with heads of ``head_dim`` (otherwise one SDPA call per prompt)."""
    return device.type == "cuda" and dtype in _FLASH_DTYPES and head_dim <= _FLASH_MAX_HEAD_DIM


def _flash_varlen(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, row: PackedRow, *, scaling: float | None) -> torch.Tensor:
    """FlashAttention's varlen kernel; causal is aligned to the lower right, so a prompt's
    queries see the prefix before them. Grouped-query heads go in as they are."""
    output = torch.ops.aten._flash_attention_forward(
        query.transpose(0, 1),
        keys.transpose(0, 1),
        values.transpose(0, 1),
        row.query_offsets,
        row.key_offsets,
        row.longest,
        row.longest_keys,
        0.0,
        True,
        False,
        scale=scaling,
    )[0]
    return output


def _per_prompt_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, row: PackedRow, *, scaling: float | None) -> torch.Tensor:
    """One SDPA call per prompt, (tokens, heads, dim): the reference the flash kernel matches."""
    outputs = []
    query_start = key_start = 0
    for length, key_length in zip(row.lengths, row.key_lengths):
        skipped = key_length - length
        q = query[:, query_start : query_start + length]
        k = keys[:, key_start : key_start + skipped + length]
        v = values[:, key_start : key_start + skipped + length]
        mask = causal_lower_right(length, skipped + length) if skipped else None
        output = torch.nn.functional.scaled_dot_product_attention(
            q[None], k[None], v[None], attn_mask=mask, is_causal=not skipped, scale=scaling, enable_gqa=q.shape[0] != k.shape[0]
        )
        outputs.append(output[0].transpose(0, 1))
        query_start += length
        key_start += key_length
    return torch.cat(outputs)
