"""Choose which ranked passages to keep: token budget, ratio, top-k, threshold.

The budget is counted with the generator's tokenizer. Each candidate passage and the separator
are counted once, and the budget is filled from those counts, best first; a passage that does
not fit is skipped and smaller, lower-ranked ones may still fill the remaining budget. The
exact context string that is returned (passages joined by the separator, in output order) is
counted at the end, so the budget is never exceeded: where a tokenizer merges tokens across a
join, the borderline cases are checked on the joined text.

With ``granularity="sentence"`` the budget is filled sentence by sentence instead, inside the
passages the other limits keep (AttentionRAG): a sentence's priority is its passage's fused
relevance plus its own calibrated attention (z-scored over all candidate sentences), so the
sentences the model attends least, in the least relevant passages, are left out first. The
kept sentences of a passage stay in their original order, joined by a space.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ragfocus.fusion import zscores
from ragfocus.ordering import arrange
from ragfocus.sentence_scores import ScoredSentence
from ragfocus.tokens import TokenCounter
from ragfocus.types import GRANULARITIES, ORDERS, FocusResult, Granularity, Order, ScoredPassage

logger = logging.getLogger(__name__)

BOUNDARY_SLACK = 2
"""Tokens a join may save (a tokenizer can merge tokens across a boundary): a passage whose
summed count misses the budget by at most this much is checked on the exact joined text."""


@dataclass(frozen=True)
class SelectionConfig:
    """How much to keep and where to put it; validated on construction.

    All limits apply together: threshold, then top-k, then the token budget. Without any
    limit every non-empty passage is kept and only reordered.
    """

    budget: int | None = None
    """Most tokens (generator's tokenizer) the context may have; 0 keeps nothing."""
    ratio: float | None = None
    """Budget as a share of the input's tokens, in [0, 1]; exclusive with ``budget``."""
    top_k: int | None = None
    """Keep at most this many passages."""
    threshold: float | None = None
    """Keep only passages whose score is at least this (fused relevance in per-query z units:
    0 is the query's average passage; with ``fusion="heads"``, calibrated attention: 0 means as
    much attention as a content-free query gives)."""
    order: Order = "relevance"
    separator: str = "\n\n"
    granularity: Granularity = "passage"

    def __post_init__(self) -> None:
        if self.budget is not None and self.ratio is not None:
            raise ValueError("give either budget= (tokens) or ratio= (share of the input), not both")
        if self.budget is not None:
            if isinstance(self.budget, bool) or not isinstance(self.budget, int):
                raise TypeError(f"budget must be an int number of tokens, got {self.budget!r}")
            if self.budget < 0:
                raise ValueError(f"budget must be >= 0 tokens, got {self.budget}")
        if self.ratio is not None:
            if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)):
                raise TypeError(f"ratio must be a number in [0, 1], got {self.ratio!r}")
            if not 0.0 <= float(self.ratio) <= 1.0:
                raise ValueError(f"ratio must be in [0, 1], got {self.ratio}")
        if self.top_k is not None:
            if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
                raise TypeError(f"top_k must be an int, got {self.top_k!r}")
            if self.top_k < 0:
                raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.threshold is not None:
            if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
                raise TypeError(f"threshold must be a number, got {self.threshold!r}")
            if math.isnan(self.threshold):
                raise ValueError("threshold must not be NaN")
        if self.order not in ORDERS:
            raise ValueError(f"order={self.order!r} is not one of {', '.join(ORDERS)}")
        if not isinstance(self.separator, str):
            raise TypeError(f"separator must be a str, got {type(self.separator).__name__}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity={self.granularity!r} is not one of {', '.join(GRANULARITIES)}")


@dataclass(frozen=True)
class Selection:
    kept: list[ScoredPassage]
    """In output order."""
    dropped: list[ScoredPassage]
    """In rank order."""
    context: str
    tokens_in: int
    tokens_out: int
    budget: int | None


def select(
    ranked: list[ScoredPassage],
    config: SelectionConfig,
    count: TokenCounter,
    *,
    sentences: Mapping[int, Sequence[ScoredSentence]] | None = None,
    slot_strength: Sequence[float] = (),
) -> Selection:
    """Apply ``config`` to ``ranked`` (best first). Empty or whitespace-only passages are
    never kept: they carry nothing for the generator; of identical passages only the best
    ranked copy can be kept. ``sentences`` (passage index -> its
    scored sentences) is needed for ``granularity="sentence"``; ``slot_strength`` for
    ``order="calibrated"``."""
    in_input_order = sorted(ranked, key=lambda passage: passage.index)
    tokens_in = count(config.separator.join(passage.text for passage in in_input_order))
    budget = config.budget
    if config.ratio is not None:
        budget = math.floor(float(config.ratio) * tokens_in)
    candidates = _first_copies([passage for passage in ranked if passage.text.strip()])
    if config.threshold is not None:
        candidates = [passage for passage in candidates if passage.score >= config.threshold]
    if config.top_k is not None:
        candidates = candidates[: config.top_k]
    if config.granularity == "sentence" and budget is not None:
        if sentences is None:
            raise ValueError("granularity='sentence' needs the scored sentences of each passage")
        kept = _fill_with_sentences(candidates, sentences, budget, config, count, slot_strength)
    else:
        kept = candidates if budget is None else _fill_budget(candidates, budget, config, count, slot_strength)
    ordered = arrange(kept, config.order, slot_strength)
    context = config.separator.join(passage.text for passage in ordered)
    tokens_out = count(context)
    while budget is not None and tokens_out > budget and len(kept) > 1 and config.granularity == "passage":
        logger.debug("the joined context has more tokens than its passages' counts; dropping the last passage added")
        kept = kept[:-1]
        ordered = arrange(kept, config.order, slot_strength)
        context = config.separator.join(passage.text for passage in ordered)
        tokens_out = count(context)
    if budget is not None and tokens_out > budget:  # never silent
        raise AssertionError(f"context has {tokens_out} tokens, over the budget of {budget}")
    kept_indices = {passage.index for passage in kept}
    dropped = [passage for passage in ranked if passage.index not in kept_indices]
    return Selection(ordered, dropped, context, tokens_in, tokens_out, budget)


def _first_copies(ranked: list[ScoredPassage]) -> list[ScoredPassage]:
    """The best-ranked copy of each text: a duplicate passage would only repeat itself in the
    context, so its later copies are dropped."""
    seen: set[str] = set()
    first = []
    for passage in ranked:
        if passage.text not in seen:
            seen.add(passage.text)
            first.append(passage)
    return first


def _fill_budget(
    candidates: list[ScoredPassage],
    budget: int,
    config: SelectionConfig,
    count: TokenCounter,
    slot_strength: Sequence[float] = (),
) -> list[ScoredPassage]:
    """Best first, each passage's own count plus a separator's; the joined text is counted
    only for a passage within ``BOUNDARY_SLACK`` of fitting (``select`` counts the context)."""
    separator = count(config.separator)
    kept: list[ScoredPassage] = []
    used = 0
    for passage in candidates:
        size = count(passage.text)
        if size > budget:
            continue
        added = size + (separator if kept else 0)
        if used + added <= budget:
            kept.append(passage)
            used += added
        elif used + added - BOUNDARY_SLACK <= budget:
            exact = _joined_count([*kept, passage], config, count, slot_strength)
            if exact <= budget:
                kept.append(passage)
                used = exact
    return kept


def _joined_count(kept: list[ScoredPassage], config: SelectionConfig, count: TokenCounter, slot_strength: Sequence[float]) -> int:
    return count(config.separator.join(item.text for item in arrange(kept, config.order, slot_strength)))


def _fill_with_sentences(
    candidates: list[ScoredPassage],
    sentences: Mapping[int, Sequence[ScoredSentence]],
    budget: int,
    config: SelectionConfig,
    count: TokenCounter,
    slot_strength: Sequence[float],
) -> list[ScoredPassage]:
    pool = [(passage, number) for passage in candidates for number in range(len(sentences.get(passage.index, ())))]
    attention = [sentences[passage.index][number].score for passage, number in pool]
    finite = [value for value in attention if math.isfinite(value)]
    floor = min(finite) if finite else 0.0
    standard = zscores([value if math.isfinite(value) else floor for value in attention])
    priority = [passage.score + value for (passage, _), value in zip(pool, standard)]
    chosen: dict[int, set[int]] = {}
    for rank in sorted(range(len(pool)), key=lambda i: (-priority[i], pool[i][0].rank, pool[i][1])):
        passage, number = pool[rank]
        trial = {**chosen, passage.index: chosen.get(passage.index, set()) | {number}}
        kept = _pruned(candidates, sentences, trial)
        text = config.separator.join(item.text for item in arrange(kept, config.order, slot_strength))
        if count(text) <= budget:
            chosen = trial
    return _pruned(candidates, sentences, chosen)


def _pruned(
    candidates: list[ScoredPassage], sentences: Mapping[int, Sequence[ScoredSentence]], chosen: Mapping[int, set[int]]
) -> list[ScoredPassage]:
    kept = []
    for passage in candidates:
        numbers = chosen.get(passage.index)
        if not numbers:
            continue
        found = sentences[passage.index]
        if len(numbers) == len(found):
            kept.append(passage)
        else:
            text = " ".join(found[number].text for number in sorted(numbers))
            kept.append(dataclasses.replace(passage, text=text))
    return kept


def focus_result(
    query: str,
    ranked: list[ScoredPassage],
    sentences: Mapping[int, Sequence[ScoredSentence]],
    config: SelectionConfig,
    count: TokenCounter,
    slot_strength: Sequence[float],
    *,
    seconds: float = 0.0,
) -> FocusResult:
    """``select`` over a ranking, wrapped as the ``FocusResult`` of ``query`` (``seconds`` as
    given). A budget below every passage logs a warning."""
    chosen = select(ranked, config, count, sentences=sentences, slot_strength=slot_strength)
    if ranked and not chosen.kept and chosen.budget is not None:
        logger.warning("budget of %d tokens is below every passage: nothing kept", chosen.budget)
    return FocusResult(
        query=query, context=chosen.context, kept=chosen.kept, dropped=chosen.dropped, tokens_in=chosen.tokens_in,
        tokens_out=chosen.tokens_out, seconds=seconds,
        budget=chosen.budget, order=config.order,
    )
