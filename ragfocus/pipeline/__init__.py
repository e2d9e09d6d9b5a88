"""The one pipeline every ranking runs through, by stage.

- ``requests``: check each ``(query, passages)`` request, find its distinct texts;
- ``ragfocus.preparation``: the prepare stage's tokenizing (prompts, distraction prompts, BM25);
- ``device``: the device stage (batched capture, attention signals, distraction);
- ``texts``: the finish stage per request (windows, fusion);
- ``assemble``: scores spread over every passage, ranked;
- ``batches``: ``Pipeline``, which runs the stages over batches of requests.

Selection (``ragfocus.selection``) and ordering (``ragfocus.ordering``) follow in ``focus``.
"""

from __future__ import annotations

from ragfocus.pipeline.assemble import Ranking, assemble
from ragfocus.pipeline.batches import Pipeline
from ragfocus.pipeline.device import DeviceStage, PromptRead
from ragfocus.pipeline.requests import DistinctTexts, Errors, Request, check_query, distinct_texts, make_request, parse_requests
from ragfocus.pipeline.settings import SIGNAL_NAMES, Scoring

__all__ = [
    "SIGNAL_NAMES",
    "DeviceStage",
    "DistinctTexts",
    "Errors",
    "Pipeline",
    "PromptRead",
    "Ranking",
    "Request",
    "Scoring",
    "assemble",
    "check_query",
    "distinct_texts",
    "make_request",
    "parse_requests",
]
