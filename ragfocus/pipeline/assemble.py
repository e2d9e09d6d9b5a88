"""The last step of ranking: spread the scores of a request's distinct texts over every
passage (duplicates share their text's score, empty passages rank last) and sort."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from ragfocus.pipeline.requests import Request
from ragfocus.pipeline.texts import ScoredTexts
from ragfocus.sentence_scores import ScoredSentence
from ragfocus.signals import RETRIEVER
from ragfocus.types import PassagePart, ScoredPassage

logger = logging.getLogger(__name__)

Ranking = tuple[list[ScoredPassage], dict[int, list[ScoredSentence]]]
"""A request's passages best first, and (with sentence scores) each passage's sentences."""


def assemble(request: Request, scored: ScoredTexts | None, names: Sequence[str], *, sentences: bool) -> Ranking:
    """Every passage of ``request`` with its text's score and signals, best first; ``names``
    are the signals a passage without text gets as NaN."""
    items, distinct = request.items, request.distinct
    signals: dict[int, dict[str, float]] = {index: dict.fromkeys(names, math.nan) for index in range(len(items))}
    scores = {index: -math.inf for index in range(len(items))}
    parts: dict[int, tuple[PassagePart, ...]] = {}
    found: dict[int, list[ScoredSentence]] = {}
    if scored is not None:
        for index, slot in distinct.slot_of.items():
            signals[index], scores[index] = dict(scored.signals[slot]), scored.scores[slot]
            parts[index] = scored.parts[slot]
            if sentences:
                found[index] = scored.sentences[slot]
        if len(distinct.slot_of) > len(distinct.texts):
            logger.info("%d duplicate passages scored once", len(distinct.slot_of) - len(distinct.texts))
    for index, item in enumerate(items):
        if item.score is not None:
            signals[index][RETRIEVER] = float(item.score)
    order = sorted(range(len(items)), key=lambda index: (-scores[index], index))
    ranked = [
        ScoredPassage(
            index=index, rank=rank, text=items[index].text, score=scores[index], signals=signals[index],
            passage=items[index], parts=parts.get(index, ()),
        )
        for rank, index in enumerate(order)
    ]
    return ranked, found
