"""``BatchOptions``: what every row of a batch job is focused with, validated once."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragfocus.selection import SelectionConfig
from ragfocus.types import Granularity, Order


@dataclass(frozen=True)
class BatchOptions:
    """The ``Focuser`` and ``Focuser.focus`` options of a batch job, plus retrieval defaults.

    Picklable and JSON-able (Ray ships it to every worker).
    """

    budget: int | None = None
    ratio: float | None = None
    top_k: int | None = None
    threshold: float | None = None
    order: Order = "relevance"
    granularity: Granularity = "passage"
    model: str | None = None
    """Scorer: Hugging Face id or local path; ``None`` is the embedded SmolLM2-135M-Instruct."""
    device: str | None = None
    """``None`` picks CUDA when present, else CPU."""
    distraction: bool | None = None
    """``None``: what the fusion profile weights (see ``Focuser``); ``False`` is about 2x faster on CPU."""
    index: str | None = None
    """Default index directory (``ragfocus index``) for rows that name no ``corpus``."""
    k: int = 10
    """Default number of passages retrieved for rows that give no ``k``."""
    batch_size: int = 8
    """Rows read, retrieved, scored (one ``Focuser.focus_many`` call: their prompts go through
    the model as one padded batch) and written together."""

    def __post_init__(self) -> None:
        SelectionConfig(**self.focus_options())  # the same checks, and messages, as Focuser.focus
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.index is not None and not Path(self.index).is_dir():
            raise ValueError(f"index {self.index!r} is not a directory; build one with: ragfocus index CORPUS INDEX_DIR")

    def focus_options(self) -> dict[str, Any]:
        """The keyword arguments of ``Focuser.focus``."""
        return {
            "budget": self.budget, "ratio": self.ratio, "top_k": self.top_k, "threshold": self.threshold,
            "order": self.order, "granularity": self.granularity,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
