"""ragfocus: read less, answer better. Rank, prune and reorder retrieved passages with the
attention of a small causal LM, under a token budget, before the generator sees them."""

from __future__ import annotations

import logging

from ragfocus.focuser import Focuser, default_focuser, focus
from ragfocus.models import DEFAULT_MODEL, LoadedModel, load_model
from ragfocus.types import FocusResult, Passage, ScoredPassage

__all__ = [
    "DEFAULT_MODEL",
    "FocusResult",
    "Focuser",
    "LoadedModel",
    "Passage",
    "ScoredPassage",
    "default_focuser",
    "focus",
    "load_model",
]
__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
