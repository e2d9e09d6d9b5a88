"""The signals a ranking reads, and the columnar table that carries them between stages.

One ``SignalTable`` per request (or per prompt): one column of floats per signal, one value per
passage, in the order the stage that made it saw the passages. The device stage fills the
attention columns, the finish stage adds the lexical, distraction and retriever columns, and
the fusion reads the table column by column (``ragfocus.fusion.fuse``). Users see one row of it
per passage, as ``ScoredPassage.signals``; the names below are the keys they read there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

RETRIEVAL_HEADS = "retrieval_heads"
"""Calibrated attention of the retrieval heads: query minus content-free query (ICR)."""
QUERY_ATTENTION = "query_attention"
"""The retrieval heads' attention from the query, per passage token."""
NULL_ATTENTION = "null_attention"
"""The retrieval heads' attention from the content-free query ("N/A"), per passage token."""
LEARNED_HEADS = "learned_heads"
"""The fusion profile's weighted heads, each head's calibrated score z-scored and weighted."""
ATTENTION_SORT = "attention_sort"
"""Attention of the answering position (attention sorting, Peysakhovich & Lerer, 2023)."""
DISTRACTION = "distraction"
"""Distracting effect, 1 - P(abstain | query, passage alone) (Amiraz et al., ACL 2025)."""
ABSTAIN_LOGPROB = "abstain_logprob"
"""log P(abstain | query, passage alone), what ``distraction`` is computed from."""
BM25 = "bm25"
"""BM25 over the request's passages (rank-bm25)."""
RETRIEVER = "retriever"
"""The caller's retriever score (``Passage.score``)."""
WINDOW_SCORE = "window_score"
"""Past one window: the fused score of the windowed ranking, before the final round."""

ATTENTION_SIGNALS = (RETRIEVAL_HEADS, QUERY_ATTENTION, NULL_ATTENTION)
"""What every ranking pass reads."""


@dataclass
class SignalTable:
    """Columns of signals over ``size`` passages: ``columns[name][i]`` is passage ``i``'s value."""

    size: int
    columns: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, values in self.columns.items():
            self._check(name, values)

    def set(self, name: str, values: Iterable[float]) -> None:
        """Set the whole column ``name``."""
        column = [float(value) for value in values]
        self._check(name, column)
        self.columns[name] = column

    def put(self, name: str, positions: Sequence[int], values: Sequence[float]) -> None:
        """Set ``values`` at ``positions`` of column ``name`` (a new column starts as NaN)."""
        if len(positions) != len(values):
            raise ValueError(f"{len(values)} values for {len(positions)} positions of {name!r}")
        column = self.columns.setdefault(name, [math.nan] * self.size)
        for position, value in zip(positions, values):
            column[position] = float(value)

    def get(self, name: str) -> list[float] | None:
        return self.columns.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def row(self, position: int) -> dict[str, float]:
        """One passage's signals, as ``ScoredPassage.signals`` shows them."""
        return {name: values[position] for name, values in self.columns.items()}

    def take(self, positions: Sequence[int]) -> SignalTable:
        """A table of the passages at ``positions``, in that order."""
        return SignalTable(len(positions), {name: [values[p] for p in positions] for name, values in self.columns.items()})

    def scaled(self, factor: float) -> SignalTable:
        """Every value times ``factor``."""
        return SignalTable(self.size, {name: [value * factor for value in values] for name, values in self.columns.items()})

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, float]], *, partial: bool = True) -> SignalTable:
        """A table of per-passage mappings. A signal only some rows have is NaN elsewhere, or
        left out with ``partial=False`` (the fusion drops such a signal anyway)."""
        names = list(dict.fromkeys(name for row in rows for name in row))
        if not partial:
            names = [name for name in names if all(name in row for row in rows)]
        return cls(len(rows), {name: [float(row.get(name, math.nan)) for row in rows] for name in names})

    def _check(self, name: str, values: Sequence[float]) -> None:
        if len(values) != self.size:
            raise ValueError(f"signal {name!r} has {len(values)} values for {self.size} passages")
