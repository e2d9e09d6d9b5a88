"""The typed inputs and results of ragfocus: ``Passage`` in, ``ScoredPassage`` and ``FocusResult`` out."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ragfocus.explain import AttentionMap, TerminalView

Order = Literal["original", "relevance", "attention", "edges", "calibrated"]
ORDERS: tuple[str, ...] = ("original", "relevance", "attention", "edges", "calibrated")
Granularity = Literal["passage", "sentence"]
GRANULARITIES: tuple[str, ...] = ("passage", "sentence")


@dataclass(frozen=True)
class Passage:
    """One retrieved passage.

    ``score`` is the retriever's own score when the caller has one; ``metadata`` is carried
    through to the result untouched (copied, never mutated).
    """

    text: str
    id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    score: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"Passage.text must be a str, got {type(self.text).__name__}")
        if not isinstance(self.metadata, Mapping):
            raise TypeError(f"Passage.metadata must be a mapping, got {type(self.metadata).__name__}")
        if self.score is not None:
            if isinstance(self.score, bool) or not isinstance(self.score, (int, float)):
                raise TypeError(f"Passage.score must be a number or None, got {self.score!r}")
            if not math.isfinite(self.score):
                raise ValueError(f"Passage.score must be finite (NaN and infinity cannot be ranked), got {self.score}")


@dataclass(frozen=True)
class PassagePart:
    """One part of a passage too long for the scorer's window: scored as a passage of its own
    (see ``ragfocus.windows``)."""

    start: int
    end: int
    """[start, end) characters of the passage text."""
    score: float
    """Fused relevance of the part; the passage's score is its best part's."""
    signals: Mapping[str, float]


@dataclass(frozen=True)
class ScoredPassage:
    """A passage with its relevance and every signal behind it.

    ``index`` is the passage's position in the caller's input list; ``rank`` its position in
    the ranking (0 = most relevant); ``passage`` the input as a ``Passage`` (id, metadata and
    retriever score included). ``score`` is the fused relevance (per-query z units: 0 is an
    average passage of this query) and ``signals`` every signal behind it, raw. With sentence
    pruning, ``text`` of a kept passage is what is left of it; ``passage.text`` stays whole.
    ``parts`` is empty unless the passage was too long for the scorer's window: then it lists
    every part (covering the whole text) with its own score, and ``score`` and ``signals`` are
    the best part's.
    """

    index: int
    rank: int
    text: str
    score: float
    signals: Mapping[str, float]
    passage: Passage
    parts: tuple[PassagePart, ...] = ()

    @property
    def id(self) -> str | None:
        return self.passage.id

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.passage.metadata


@dataclass(frozen=True)
class FocusResult:
    """What ``focus`` hands to the generator, and why.

    ``kept`` is in output order (the order of ``context``); ``dropped`` in rank order.
    Token counts use the generator's tokenizer: ``tokens_in`` for all passages joined in
    their input order, ``tokens_out`` for ``context``. ``budget`` is the token budget that was
    enforced (``None`` when no budget or ratio was asked for).
    """

    query: str
    context: str
    kept: list[ScoredPassage]
    dropped: list[ScoredPassage]
    tokens_in: int
    tokens_out: int
    seconds: float
    budget: int | None
    order: Order

    @property
    def tokens_saved(self) -> int:
        return self.tokens_in - self.tokens_out

    @property
    def compression(self) -> float:
        """``tokens_out / tokens_in`` (1.0 for an empty input)."""
        return self.tokens_out / self.tokens_in if self.tokens_in else 1.0

    def to_html(self, attention: AttentionMap | None = None) -> str:
        """A self-contained HTML report of this result (``ragfocus.explain``); ``attention``
        from ``ragfocus.explain.token_attention`` adds a heat map over each passage's text."""
        from ragfocus.explain.html import render_html

        return render_html(self, attention)

    def explain(self) -> TerminalView:
        """Kept and dropped passages with scores and signal bars: ``rich.print`` it, or ``str()``."""
        from ragfocus.explain.terminal import TerminalView

        return TerminalView(self)
