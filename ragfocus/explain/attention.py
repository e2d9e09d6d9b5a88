"""Per-token calibrated attention over each passage's text: the heat map of the explain report.

The quantity is the one sentence pruning reads (``calibrated_per_token``): for every passage
token, the attention it receives from the query's tokens minus what it receives from the
content-free query "N/A", summed over the Focuser's retrieval heads, with sink tokens masked
(ICR, Chen et al., ICLR 2025). Token positions are mapped back to character ranges of each
passage's text through the tokenizer's offset mapping (``TokenizedPrompt.prefix_offsets``).

Reading it costs one extra capture on top of ``Focuser.focus``: the prefill of the shared
prefix and the two short query suffixes, over the same prompt ``focus`` builds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ragfocus.passages import PassageLike, as_passages
from ragfocus.prompt import TokenizedPrompt, build_prompt

if TYPE_CHECKING:
    from ragfocus.focuser import Focuser

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenHeat:
    """One token of a passage."""

    start: int
    end: int
    """[start, end) characters of the passage text."""
    value: float
    """Calibrated attention (query minus "N/A", summed over the heads); NaN for a masked sink."""


@dataclass(frozen=True)
class SentenceHeat:
    """One sentence of a passage (pysbd), scored as sentence pruning scores it."""

    start: int
    end: int
    """[start, end) characters of the passage text."""
    text: str
    score: float
    """Mean calibrated attention over the sentence's tokens (NaN when all are sinks)."""


@dataclass(frozen=True)
class PassageHeat:
    """The heat map of one passage: its tokens, and its sentences when they were asked for."""

    index: int
    """The passage's position in the caller's input list."""
    tokens: tuple[TokenHeat, ...]
    sentences: tuple[SentenceHeat, ...] = ()


@dataclass(frozen=True)
class AttentionMap:
    """Per-token calibrated attention of every non-empty passage, by input index.

    ``note`` says why the map is missing or incomplete (``None`` when it is whole).
    """

    passages: Mapping[int, PassageHeat] = field(default_factory=dict)
    note: str | None = None
    heads: int = 0
    """How many attention heads the values are summed over."""

    @classmethod
    def unavailable(cls, note: str) -> AttentionMap:
        """An empty map that says why."""
        return cls(passages={}, note=note)

    def scale(self) -> float:
        """The magnitude that maps to full colour: the 95th percentile of ``|value|`` over every
        token of every passage (so one outlier token does not wash out the rest); 1.0 when
        there is nothing to scale."""
        values = [abs(token.value) for heat in self.passages.values() for token in heat.tokens if math.isfinite(token.value)]
        if not values:
            return 1.0
        values.sort()
        top = values[min(len(values) - 1, int(0.95 * len(values)))]
        return top if top > 0 else (values[-1] or 1.0)


def token_attention(focuser: Focuser, query: str, passages: Sequence[PassageLike], *, sentences: bool = False) -> AttentionMap:
    """Calibrated attention per token of every non-empty passage, as ``focuser`` reads it.

    The Focuser's model, retrieval heads and sink factor are used.
    With ``sentences=True`` each passage also gets its sentences' scores (what
    ``granularity="sentence"`` prunes by). A prompt longer than the model's window gives an
    empty map with a note instead of an error.

    >>> heat = token_attention(focuser, "Who wrote Hamlet?", ["Hamlet is a tragedy by Shakespeare."])  # doctest: +SKIP
    >>> [(t.start, t.end, round(t.value, 3)) for t in heat.passages[0].tokens][:3]                   # doctest: +SKIP
    [(0, 6, 0.113), (6, 9, 0.322), (9, 11, 0.022)]
    """
    items = as_passages(passages)
    present = [index for index, item in enumerate(items) if item.text.strip()]
    if not present:
        return AttentionMap.unavailable("no heat map: every passage is empty")
    loaded = focuser.loaded
    prompt = build_prompt(loaded.tokenizer, query, [items[index].text for index in present])
    limit = loaded.max_positions
    if limit is not None and prompt.total_tokens > limit:
        note = (f"no heat map: the ranking prompt is {prompt.total_tokens} tokens, more than the {limit} "
                f"that {loaded.name} reads")
        logger.warning(note)
        return AttentionMap.unavailable(note)
    texts = [items[index].text for index in present]
    with focuser.lock:  # the engine serves one call at a time, as in Focuser.focus
        (read,) = focuser.pipeline.stage.read([prompt], [query], [texts], sentences=True)
    per_token = read.per_token
    assert per_token is not None
    found = read.sentences if sentences else None
    result: dict[int, PassageHeat] = {}
    for position, index in enumerate(present):
        sentence_heat = ()
        if found is not None:
            sentence_heat = tuple(SentenceHeat(s.start, s.end, s.text, s.score) for s in found[position])
        result[index] = PassageHeat(index, _passage_tokens(prompt, position, per_token), sentence_heat)
    return AttentionMap(passages=result, heads=sum(len(set(layer_heads)) for layer_heads in focuser.heads.values()))


def _passage_tokens(prompt: TokenizedPrompt, position: int, per_token: torch.Tensor) -> tuple[TokenHeat, ...]:
    """The tokens of passage ``position`` (prompt order) as non-overlapping character ranges of its text."""
    first, last = prompt.passage_spans[position]
    offset, stop = prompt.passage_chars[position]
    tokens: list[TokenHeat] = []
    cursor = 0
    for token in range(first, last):
        start, end = prompt.prefix_offsets[token]
        start, end = max(start, offset) - offset, min(end, stop) - offset
        start = max(start, cursor)  # byte-level pieces of one character share its range
        if end <= start:
            continue
        tokens.append(TokenHeat(start, end, float(per_token[token])))
        cursor = end
    return tuple(tokens)
