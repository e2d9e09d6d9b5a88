"""What a ``Focuser`` reads and how it fuses it: fixed when the ``Focuser`` is made, handed to
every stage of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from ragfocus.engine import HeadSet
from ragfocus.fusion import FusionProfile
from ragfocus.scoring.heads import merge_heads
from ragfocus.scoring.retrieval_heads import Aggregate
from ragfocus.signals import (
    ABSTAIN_LOGPROB,
    ATTENTION_SORT,
    BM25,
    DISTRACTION,
    LEARNED_HEADS,
    NULL_ATTENTION,
    QUERY_ATTENTION,
    RETRIEVAL_HEADS,
)

SIGNAL_NAMES = (RETRIEVAL_HEADS, QUERY_ATTENTION, NULL_ATTENTION, BM25)
"""Signals every scored passage carries; ``learned_heads`` (when the fusion profile has head
weights), ``attention_sort`` (with ``sort_rounds`` > 0), ``distraction`` and
``abstain_logprob`` (with ``distraction=True``) and ``retriever`` (when the caller gave a
score) are added."""


@dataclass(frozen=True)
class Scoring:
    """The scoring settings of one ``Focuser`` (see its arguments)."""

    heads: HeadSet
    """The retrieval heads summed into the calibrated signal."""
    sort_heads: HeadSet
    """The heads attention sorting reads."""
    fusion: FusionProfile
    sink_factor: float | None
    aggregate: Aggregate
    sort_rounds: int
    distraction: bool
    positional: bool
    prompt_tokens: int | None
    """Most tokens of a ranking prompt scored in one piece (``None``: no limit)."""
    window_tokens: int | None
    """The size of a window past ``prompt_tokens``."""
    final_round: int

    @property
    def sorting(self) -> bool:
        return self.sort_rounds > 0

    @property
    def heads_read(self) -> HeadSet:
        """Every head a ranking pass captures: retrieval, sorting and learned-weight heads."""
        read = merge_heads(self.heads, self.sort_heads) if self.sorting else self.heads
        if self.fusion.head_weights:
            read = merge_heads(read, self.fusion.weighted_head_set)
        return read

    @property
    def signal_names(self) -> tuple[str, ...]:
        """The signals every non-empty passage gets (``retriever`` aside)."""
        names = list(SIGNAL_NAMES)
        if self.fusion.head_weights:
            names.append(LEARNED_HEADS)
        if self.sorting:
            names.append(ATTENTION_SORT)
        if self.distraction:
            names += [DISTRACTION, ABSTAIN_LOGPROB]
        return tuple(names)
