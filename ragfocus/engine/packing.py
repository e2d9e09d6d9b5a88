"""Several suffixes of one prompt packed into one sequence over the prompt's prefix cache.

ICR (Chen et al., ICLR 2025) reads the attention of two suffixes over the same prefix (the
query and a content-free calibration query), and attention sorting (Peysakhovich & Lerer,
2023) a third. Run as separate batch rows, each suffix needs its own copy of the prefix's KV
cache. Packed instead into one sequence per prompt, every suffix token attends to the whole
prefix and causally to the earlier tokens of its own suffix only (a block mask), and each
suffix's positions restart right after the prefix, so every token sees exactly what it would
see in its own row: one cache, no copies. The attention rows a caller reads are gathered
into a short list per prompt, so the capture computes only those rows.

The first suffix need not wait for the cache at all: it continues its prefix in the prefix
pass itself (``continue_prefixes``), under the causal mask, exactly as a prompt followed by
one query would run. The packed suffixes then mask its tokens out of the cache. This takes the
longest suffix (the query) out of the masked suffix pass, which measured faster on a GPU
(``docs/gpu.md``).

Everything here is built on the host, once per batch, as index and mask tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ragfocus.engine.kernels import padded_width, to_device

SUFFIX_MULTIPLE = 16
"""Packed suffix widths are rounded up to a multiple of this many tokens."""

ROW_MULTIPLE = 8
"""The number of rows read per prompt is rounded up to a multiple of this."""


@dataclass(frozen=True)
class PackedSuffixes:
    """One batch of packed suffixes, ready for the forward pass over a prefix cache.

    ``B`` prompts, ``S`` suffixes each, ``Q`` packed suffix positions, ``P`` prefix width
    (the cache's length), ``R`` rows read per prompt. Only small index tensors are built on
    the host; ``masks`` builds the (B, Q, P + Q) masks wherever the tensors are.
    """

    input_ids: torch.Tensor
    """(B, Q) long: each prompt's suffixes one after another, then padding."""
    position_ids: torch.Tensor
    """(B, Q) long: each suffix restarts at its prompt's prefix length."""
    block: torch.Tensor
    """(B, Q) long: which suffix each position belongs to; ``S`` for padding."""
    prefix_lengths: torch.Tensor
    """(B,) long: each prompt's real prefix tokens (the rest of the ``P`` are padding)."""
    row_index: torch.Tensor
    """(B, R) long: the packed positions of the rows read; unused slots repeat a read row."""
    row_weights: torch.Tensor
    """(B, S, R) float32: 1/n over the n rows read of each suffix, 0 elsewhere, so that
    weights @ attention is each suffix's mean attention row."""
    prefix_width: int

    def to(self, device: torch.device) -> PackedSuffixes:
        """The same tensors on ``device`` (copied without waiting: ``kernels.to_device``)."""
        moved = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = to_device(value, device)
        return PackedSuffixes(**moved)

    def masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass's mask and the capture's bias, on the tensors' device.

        - (B, 1, Q, P + Q) bool, True where a position may attend: its prompt's real prefix
          tokens and the earlier positions of its own suffix (a padding position sees the
          prefix and the padding before it, so that no row is empty);
        - (B, 1, R, P + Q) float32 for the rows read: 0 where they may attend, -inf elsewhere.
        """
        batch, width = self.input_ids.shape
        device = self.input_ids.device
        sees_prefix = torch.arange(self.prefix_width, device=device)[None, None, :] < self.prefix_lengths[:, None, None]
        positions = torch.arange(width, device=device)
        causal = positions[None, :] <= positions[:, None]  # key <= query
        own_block = (self.block[:, :, None] == self.block[:, None, :]) & causal[None]
        mask = torch.cat([sees_prefix.expand(batch, width, self.prefix_width), own_block], dim=2)
        read = mask.gather(1, self.row_index[:, :, None].expand(-1, -1, mask.shape[2]))
        bias = torch.zeros(read.shape, dtype=torch.float32, device=device).masked_fill_(~read, float("-inf"))
        return mask[:, None], bias[:, None]


def pack_suffixes(
    prefix_lengths: Sequence[int],
    prefix_width: int,
    suffixes: Sequence[Sequence[Sequence[int]]],
    rows: Sequence[Sequence[tuple[int, int]]],
    *,
    pad_id: int,
) -> PackedSuffixes:
    """Pack every prompt's suffixes into one sequence (module docstring).

    ``rows[b][s]`` is the [start, end) of the rows read within suffix ``s`` of prompt ``b``.
    Inputs are assumed valid (``AttentionEngine`` checks them).
    """
    batch, count = len(suffixes), len(suffixes[0])
    width = padded_width(max(sum(len(suffix) for suffix in group) for group in suffixes), SUFFIX_MULTIPLE)
    row_count = padded_width(max(sum(end - start for start, end in ranges) for ranges in rows), ROW_MULTIPLE)

    input_ids = np.full((batch, width), pad_id, dtype=np.int64)
    position_ids = np.zeros((batch, width), dtype=np.int64)
    block = np.full((batch, width), count, dtype=np.int64)  # padding: a block of its own
    row_index = np.zeros((batch, row_count), dtype=np.int64)
    row_weights = np.zeros((batch, count, row_count), dtype=np.float32)
    for element, (group, ranges) in enumerate(zip(suffixes, rows)):
        offset = slot = 0
        for which, (suffix, (start, end)) in enumerate(zip(group, ranges)):
            length, read = len(suffix), end - start
            input_ids[element, offset : offset + length] = suffix
            position_ids[element, offset : offset + length] = np.arange(length) + prefix_lengths[element]
            block[element, offset : offset + length] = which
            row_index[element, slot : slot + read] = np.arange(offset + start, offset + end)
            row_weights[element, which, slot : slot + read] = 1.0 / read
            offset += length
            slot += read
        position_ids[element, offset:] = prefix_lengths[element]
        row_index[element, slot:] = row_index[element, 0]  # weight 0: any row that sees keys
    return PackedSuffixes(
        input_ids=torch.from_numpy(input_ids),
        position_ids=torch.from_numpy(position_ids),
        block=torch.from_numpy(block),
        prefix_lengths=torch.tensor(list(prefix_lengths), dtype=torch.long),
        row_index=torch.from_numpy(row_index),
        row_weights=torch.from_numpy(row_weights),
        prefix_width=prefix_width,
    )


@dataclass(frozen=True)
class ContinuedSuffix:
    """The rows read from each prompt's first suffix, run right after its prefix in the
    prefix pass (``continue_prefixes``). ``B`` prompts, ``R`` rows read per prompt."""

    row_index: torch.Tensor
    """(B, R) long: the positions of the rows read in the prefix pass; unused slots repeat a
    read row."""
    row_weights: torch.Tensor
    """(B, 1, R) float32: 1/n over the n rows read, 0 elsewhere (``PackedSuffixes.row_weights``
    with one suffix)."""
    prefix_lengths: torch.Tensor
    """(B,) long: each prompt's prefix tokens (the suffix starts there)."""

    def to(self, device: torch.device) -> ContinuedSuffix:
        """The same tensors on ``device`` (copied without waiting: ``kernels.to_device``)."""
        return ContinuedSuffix(*(to_device(getattr(self, name), device) for name in self.__dataclass_fields__))

    def bias(self, width: int) -> torch.Tensor:
        """(B, 1, R, width) float32 for the rows read: 0 on the keys a row sees under the
        causal mask (its prefix, and its own suffix up to itself), -inf elsewhere."""
        keys = torch.arange(width, device=self.row_index.device)
        seen = keys[None, None, :] <= self.row_index[:, :, None]
        return torch.zeros(seen.shape, dtype=torch.float32, device=seen.device).masked_fill_(~seen, float("-inf"))[:, None]

    def on_prefix(self, width: int) -> torch.Tensor:
        """(B, 1, 1, width) float32: 1 on each prompt's prefix tokens, 0 on its suffix and
        padding, to keep only the attention onto the prefix."""
        keys = torch.arange(width, device=self.prefix_lengths.device)
        return (keys[None, :] < self.prefix_lengths[:, None]).float()[:, None, None]


def continue_prefixes(
    prefixes: Sequence[Sequence[int]],
    suffixes: Sequence[Sequence[int]],
    rows: Sequence[tuple[int, int]],
    *,
    pad_id: int,
) -> tuple[torch.Tensor, ContinuedSuffix]:
    """Each prefix followed by its suffix, right-padded to a common width rounded up to
    ``PAD_MULTIPLE`` (``kernels.padded_width``), and the rows to read: ``rows[b]`` is the
    [start, end) within suffix ``b``. Inputs are assumed valid (``AttentionEngine`` checks
    them)."""
    batch = len(prefixes)
    width = padded_width(max(len(prefix) + len(suffix) for prefix, suffix in zip(prefixes, suffixes)))
    row_count = padded_width(max(end - start for start, end in rows), ROW_MULTIPLE)
    input_ids = np.full((batch, width), pad_id, dtype=np.int64)
    row_index = np.zeros((batch, row_count), dtype=np.int64)
    row_weights = np.zeros((batch, 1, row_count), dtype=np.float32)
    for element, (prefix, suffix, (start, end)) in enumerate(zip(prefixes, suffixes, rows)):
        length = len(prefix)
        input_ids[element, :length] = prefix
        input_ids[element, length : length + len(suffix)] = suffix
        row_index[element, : end - start] = np.arange(length + start, length + end)
        row_index[element, end - start :] = length + start  # weight 0: any row that sees keys
        row_weights[element, 0, : end - start] = 1.0 / (end - start)
    continued = ContinuedSuffix(
        row_index=torch.from_numpy(row_index),
        row_weights=torch.from_numpy(row_weights),
        prefix_lengths=torch.tensor([len(prefix) for prefix in prefixes], dtype=torch.long),
    )
    return torch.from_numpy(input_ids), continued


@dataclass(frozen=True)
class PackedPrompts:
    """Every prompt of a batch with all its suffixes, packed end to end in one row with no
    padding (``pack_prompts``), for a single pass on CUDA (``ragfocus.engine.varlen``).

    Per prompt the row holds its prefix followed by its first suffix (which continues it
    causally, as in ``continue_prefixes``), then each further suffix, which attends to the
    prefix's tokens and causally to itself (``keyed_row``), so every token sees what it sees in
    the two-pass capture. ``B`` prompts, ``S`` suffixes each, ``T`` tokens in the row, ``R``
    rows read per prompt, ``K`` the local key window (each prompt's tokens, from its start).
    """

    input_ids: torch.Tensor
    """(1, T) long."""
    position_ids: torch.Tensor
    """(1, T) long: a prefix counts from 0; every suffix from its prefix's end."""
    lengths: list[int]
    """The row's attention segments in order: per prompt, prefix and first suffix, then each
    further suffix."""
    key_index: list[np.ndarray]
    """Per segment, the row positions it attends to (``varlen.keyed_row``)."""
    row_index: torch.Tensor
    """(B, R) long: the row positions of the rows read; unused slots repeat a read row."""
    row_weights: torch.Tensor
    """(B, S, R) float32: 1/n over the n rows read of each suffix, 0 elsewhere."""
    key_window: torch.Tensor
    """(B, K) long: per prompt, the row positions of its local keys (its tokens from its
    start; past the row's end, the row's last token, never seen)."""
    row_local: torch.Tensor
    """(B, R) long: each row read, as a local key position."""
    block_start: torch.Tensor
    """(B, R) long: where the suffix of each row read starts, as a local key position."""
    prefix_lengths: torch.Tensor
    """(B,) long."""

    def to(self, device: torch.device) -> PackedPrompts:
        """The tensors on ``device`` (copied without waiting: ``kernels.to_device``)."""
        moved = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = to_device(value, device)
        return PackedPrompts(**moved)

    def bias(self) -> torch.Tensor:
        """(B, 1, R, K) float32 for the rows read over the local keys: 0 on the prompt's
        prefix and on its own suffix up to the row, -inf elsewhere."""
        keys = torch.arange(self.key_window.shape[1], device=self.row_local.device)[None, None, :]
        seen = (keys < self.prefix_lengths[:, None, None]) | ((keys >= self.block_start[:, :, None]) & (keys <= self.row_local[:, :, None]))
        return torch.zeros(seen.shape, dtype=torch.float32, device=seen.device).masked_fill_(~seen, float("-inf"))[:, None]

    def on_prefix(self, width: int) -> torch.Tensor:
        """(B, 1, 1, width) float32: 1 on each prompt's prefix tokens, 0 elsewhere."""
        keys = torch.arange(width, device=self.prefix_lengths.device)
        return (keys[None, :] < self.prefix_lengths[:, None]).float()[:, None, None]


def pack_prompts(
    prefixes: Sequence[Sequence[int]],
    suffixes: Sequence[Sequence[Sequence[int]]],
    rows: Sequence[Sequence[tuple[int, int]]],
) -> PackedPrompts:
    """Pack every prompt and its suffixes into one row (``PackedPrompts``). ``rows[b][s]`` is
    the [start, end) of the rows read within suffix ``s`` of prompt ``b``. Inputs are assumed
    valid (``AttentionEngine`` checks them)."""
    batch, count = len(prefixes), len(suffixes[0])
    row_count = padded_width(max(sum(end - start for start, end in ranges) for ranges in rows), ROW_MULTIPLE)
    totals = [len(prefix) + sum(len(suffix) for suffix in group) for prefix, group in zip(prefixes, suffixes)]
    tokens = sum(totals)
    window = padded_width(max(totals))
    ids: list[Sequence[int]] = []
    positions: list[np.ndarray] = []
    lengths: list[int] = []
    key_index: list[np.ndarray] = []
    row_index = np.zeros((batch, row_count), dtype=np.int64)
    row_local = np.zeros((batch, row_count), dtype=np.int64)
    block_start = np.zeros((batch, row_count), dtype=np.int64)
    row_weights = np.zeros((batch, count, row_count), dtype=np.float32)
    start = 0
    for element, (prefix, group, ranges) in enumerate(zip(prefixes, suffixes, rows)):
        prefix_length = len(prefix)
        local = slot = 0
        for which, (suffix, (first, last)) in enumerate(zip(group, ranges)):
            if which == 0:
                ids.append(prefix)
                positions.append(np.arange(prefix_length + len(suffix)))
                lengths.append(prefix_length + len(suffix))
                key_index.append(np.arange(start, start + prefix_length + len(suffix)))
                local = prefix_length
            else:
                positions.append(np.arange(len(suffix)) + prefix_length)
                lengths.append(len(suffix))
                key_index.append(np.concatenate([np.arange(start, start + prefix_length), np.arange(start + local, start + local + len(suffix))]))
            ids.append(suffix)
            read = last - first
            row_local[element, slot : slot + read] = np.arange(local + first, local + last)
            block_start[element, slot : slot + read] = local
            row_weights[element, which, slot : slot + read] = 1.0 / read
            local += len(suffix)
            slot += read
        row_local[element, slot:] = row_local[element, 0]  # weight 0: any row that sees keys
        block_start[element, slot:] = block_start[element, 0]
        row_index[element] = start + row_local[element]
        start += local
    key_window = np.minimum(np.asarray([0, *np.cumsum(totals)[:-1]])[:, None] + np.arange(window)[None, :], tokens - 1)
    flat = np.fromiter((token for sequence in ids for token in sequence), dtype=np.int64, count=tokens)
    return PackedPrompts(
        input_ids=torch.from_numpy(flat)[None, :],
        position_ids=torch.from_numpy(np.concatenate(positions))[None, :],
        lengths=lengths,
        key_index=key_index,
        row_index=torch.from_numpy(row_index),
        row_weights=torch.from_numpy(row_weights),
        key_window=torch.from_numpy(key_window),
        row_local=torch.from_numpy(row_local),
        block_start=torch.from_numpy(block_start),
        prefix_lengths=torch.tensor([len(prefix) for prefix in prefixes], dtype=torch.long),
    )
