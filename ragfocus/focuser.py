"""``Focuser``: rank passages by the scorer's attention, then keep what fits.

>>> from ragfocus import Focuser                                            # doctest: +SKIP
>>> focuser = Focuser()             # embedded SmolLM2-135M-Instruct, loaded once
>>> result = focuser.focus("Who wrote Hamlet?", passages, budget=300)
>>> [p.index for p in result.kept], result.tokens_in, result.tokens_out
([3, 0], 1480, 271)
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from ragfocus.engine import AttentionEngine, HeadSet
from ragfocus.fusion import FusionArgument, FusionProfile, choose_fusion, fuse
from ragfocus.head_choice import HeadsArgument, choose_heads
from ragfocus.head_profile import HeadProfile
from ragfocus.models import LoadedModel, load_model
from ragfocus.passages import PassageLike, as_passages
from ragfocus.prompt import TokenizedPrompt, build_prompt
from ragfocus.scoring.attention_sort import attention_sort, check_sort_rounds, passage_attention
from ragfocus.scoring.distraction import distraction_scores
from ragfocus.scoring.heads import merge_heads
from ragfocus.scoring.lexical import bm25_scores
from ragfocus.scoring.retrieval_heads import (
    DEFAULT_SINK_FACTOR,
    Aggregate,
    calibrated_per_token,
    capture_head_attention,
    check_aggregate,
    learned_head_scores,
    score_head_set,
)
from ragfocus.selection import SelectionConfig, select
from ragfocus.sentence_scores import ScoredSentence, sentence_scores
from ragfocus.tokens import TokenCounter, token_counter
from ragfocus.types import FocusResult, Granularity, Order, Passage, ScoredPassage

logger = logging.getLogger(__name__)

SIGNAL_NAMES = ("retrieval_heads", "query_attention", "null_attention", "bm25")
"""Signals every scored passage carries; ``learned_heads`` (when the fusion profile has head
weights), ``attention_sort`` (with ``sort_rounds`` > 0),
``distraction`` and ``abstain_logprob`` (with ``distraction=True``) and ``retriever`` (when the
caller gave a score) are added."""


class Focuser:
    """Ranks and prunes retrieved passages with a small causal LM's attention.

    Args:
        model: ``None`` for the embedded default (SmolLM2-135M-Instruct), a Hugging Face hub
            id or local path, or an already ``LoadedModel``.
        heads: which attention heads to read. ``None``: the bundled head profile of the model
            (SmolLM2-135M ships one), else every head of the middle half of the layers with a
            warning; ``"auto"``: detect a profile once and cache it; a ``HeadProfile`` or the
            path of a profile JSON (checked against the model); or ``{layer: heads}``.
        tokenizer: the generator's tokenizer for budgets (HF tokenizer, name, or callable
            ``str -> int``); default the scorer's own.
        device: ``None`` picks CUDA when present, else CPU.
        sink_factor: content-free attention above this multiple of the median marks a token
            as a sink and masks it; ``None`` masks nothing.
        aggregate: ``"mean"`` (default) scores a passage by calibrated attention per token,
            ``"sum"`` by its total (ICR's choice, which also rewards length).
        fusion: how signals become one relevance. ``None``: the model's bundled fusion
            profile (weights tuned on HotpotQA dev 0-2999), else retrieval heads alone;
            ``"heads"``: retrieval heads alone; a ``FusionProfile`` or its JSON path.
        sort_rounds: rounds of attention sorting (0 = off; default: the fusion profile's).
            Round one is read from the ranking pass; each further round costs one prefill.
        distraction: compute the distracting effect of each passage (one more batched pass
            over the passages, each alone; default: when the fusion profile weights it).
            ``False`` leaves it out of the fusion: on CPU the default costs about 2.7 plain
            forward passes with it and about 1 without (docs/benchmarks.md).
        positional: remove the model's positional attention bias (the fusion profile's
            ``position_bias``) before fusing; default: what tuning chose for the profile.

    One ``Focuser`` is safe to share between threads; calls on it are serialized.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | LoadedModel | None = None,
        *,
        heads: HeadsArgument = None,
        tokenizer: Any = None,
        device: str | None = None,
        sink_factor: float | None = DEFAULT_SINK_FACTOR,
        aggregate: Aggregate = "mean",
        fusion: FusionArgument = None,
        sort_rounds: int | None = None,
        distraction: bool | None = None,
        positional: bool | None = None,
    ) -> None:
        self.loaded = model if isinstance(model, LoadedModel) else load_model(model, device=device)
        self.engine = AttentionEngine(self.loaded.model)
        choice = choose_heads(self.loaded, heads)
        self.heads: HeadSet = choice.heads
        self.profile: HeadProfile | None = choice.profile
        self.heads_source: str = choice.source
        self.engine.validate_heads(self.heads)
        logger.info("reading %s", self.heads_source)
        if sink_factor is not None and not (isinstance(sink_factor, (int, float)) and sink_factor > 0):
            raise ValueError(f"sink_factor must be a positive number or None, got {sink_factor!r}")
        self.sink_factor = sink_factor
        check_aggregate(aggregate)
        self.aggregate: Aggregate = aggregate
        self.fusion: FusionProfile = choose_fusion(self.loaded, fusion)
        self.sort_rounds = self.fusion.sort_rounds if sort_rounds is None else sort_rounds
        check_sort_rounds(self.sort_rounds)
        if self.fusion.uses("attention_sort") and self.sort_rounds == 0:
            raise ValueError("the fusion profile weights attention_sort: sort_rounds must be at least 1 (or use fusion='heads')")
        self._sort_heads: HeadSet = self.fusion.sort_head_set if self.fusion.sort_heads else self.heads
        self.engine.validate_heads(self._sort_heads)
        if self.fusion.head_weights:
            self.engine.validate_heads(self.fusion.weighted_head_set)
        self.distraction = self.fusion.uses("distraction") if distraction is None else bool(distraction)
        if self.fusion.uses("distraction") and not self.distraction:
            logger.info("distraction=False: the fusion profile's distraction weight is left out (one pass fewer)")
        self.positional = self.fusion.calibrate_positions if positional is None else bool(positional)
        self._count = token_counter(tokenizer if tokenizer is not None else self.loaded.tokenizer)
        self._lock = threading.RLock()

    @property
    def signal_names(self) -> tuple[str, ...]:
        """The signals every non-empty passage gets from this Focuser (``retriever`` aside)."""
        names = list(SIGNAL_NAMES)
        if self.fusion.head_weights:
            names.append("learned_heads")
        if self.sort_rounds > 0:
            names.append("attention_sort")
        if self.distraction:
            names += ["distraction", "abstain_logprob"]
        return tuple(names)

    def rank(self, query: str, passages: Sequence[PassageLike]) -> list[ScoredPassage]:
        """Score every passage; best first, nothing dropped.

        Empty or whitespace-only passages are not shown to the model: they get score
        ``-inf`` and NaN signals and rank last.

        Raises:
            TypeError: ``query`` is not a str, or a passage is not a str/Passage/Document.
            ValueError: the query is empty, or the prompt exceeds the model's context.
        """
        _check_query(query)
        items = as_passages(passages)
        with self._lock:
            return self._rank(query, items, sentences=False)[0]

    def focus(
        self,
        query: str,
        passages: Sequence[PassageLike],
        *,
        budget: int | None = None,
        ratio: float | None = None,
        top_k: int | None = None,
        threshold: float | None = None,
        order: Order = "relevance",
        tokenizer: Any = None,
        separator: str = "\n\n",
        granularity: Granularity = "passage",
    ) -> FocusResult:
        """Rank, keep what fits and arrange it: see ``SelectionConfig`` for the options.

        ``granularity="sentence"`` prunes inside passages too: the sentences that receive the
        least calibrated attention go first until the budget holds (AttentionRAG); a kept
        passage's ``text`` is then what is left of it (``passage.text`` stays whole).

        ``budget`` and ``ratio`` are counted with ``tokenizer`` (the generator's; default the
        one given to the ``Focuser``). A budget below every passage keeps nothing and logs a
        warning; the empty context is returned, not an error.
        """
        started = time.perf_counter()
        config = SelectionConfig(
            budget=budget, ratio=ratio, top_k=top_k, threshold=threshold, order=order, separator=separator,
            granularity=granularity,
        )
        count: TokenCounter = token_counter(tokenizer) if tokenizer is not None else self._count
        _check_query(query)
        items = as_passages(passages)
        with self._lock:
            ranked, found = self._rank(query, items, sentences=config.granularity == "sentence")
        chosen = select(ranked, config, count, sentences=found, slot_strength=self.fusion.slot_strength)
        if ranked and not chosen.kept and chosen.budget is not None:
            logger.warning("budget of %d tokens is below every passage: nothing kept", chosen.budget)
        return FocusResult(
            query=query,
            context=chosen.context,
            kept=chosen.kept,
            dropped=chosen.dropped,
            tokens_in=chosen.tokens_in,
            tokens_out=chosen.tokens_out,
            seconds=time.perf_counter() - started,
            budget=chosen.budget,
            order=config.order,
        )

    def _rank(
        self, query: str, items: list[Passage], *, sentences: bool
    ) -> tuple[list[ScoredPassage], dict[int, list[ScoredSentence]]]:
        present = [index for index, item in enumerate(items) if item.text.strip()]
        names = self.signal_names
        signals: dict[int, dict[str, float]] = {index: dict.fromkeys(names, math.nan) for index in range(len(items))}
        scores = {index: -math.inf for index in range(len(items))}
        found: dict[int, list[ScoredSentence]] = {}
        if present:
            texts = [items[index].text for index in present]
            prompt = build_prompt(self.loaded.tokenizer, query, texts)
            self._check_length(prompt.total_tokens, prompt.passage_spans, present)
            started = time.perf_counter()
            table, per_passage = self._signals(query, texts, prompt, [items[index].score for index in present], sentences=sentences)
            fused = fuse(table, self.fusion, positional=self.positional)
            logger.debug("scored %d passages (%d tokens) in %.3f s", len(present), prompt.total_tokens, time.perf_counter() - started)
            for position, index in enumerate(present):
                signals[index] = table[position]
                scores[index] = fused[position]
                if per_passage is not None:
                    found[index] = per_passage[position]
        for index, item in enumerate(items):
            if item.score is not None:
                signals[index]["retriever"] = float(item.score)
        order = sorted(range(len(items)), key=lambda index: (-scores[index], index))
        ranked = [
            ScoredPassage(index=index, rank=rank, text=items[index].text, score=scores[index], signals=signals[index], passage=items[index])
            for rank, index in enumerate(order)
        ]
        return ranked, found

    def _signals(
        self,
        query: str,
        texts: list[str],
        prompt: TokenizedPrompt,
        retriever: list[float | None],
        *,
        sentences: bool,
    ) -> tuple[list[dict[str, float]], list[list[ScoredSentence]] | None]:
        """Every signal of every passage (prompt order), raw: fusion z-scores them."""
        sorting = self.sort_rounds > 0
        read = merge_heads(self.heads, self._sort_heads) if sorting else self.heads
        if self.fusion.head_weights:
            read = merge_heads(read, self.fusion.weighted_head_set)
        attention = capture_head_attention(self.engine, prompt, read, sort=sorting)
        heads = score_head_set(attention, self.heads, prompt.passage_spans, sink_factor=self.sink_factor, aggregate=self.aggregate)
        table = [
            {"retrieval_heads": heads.calibrated[i], "query_attention": heads.query_mass[i], "null_attention": heads.null_mass[i]}
            for i in range(len(texts))
        ]
        if self.fusion.head_weights:
            learned = learned_head_scores(attention, self.fusion.head_weights, prompt.passage_spans, sink_factor=self.sink_factor)
            for i, value in enumerate(learned):
                table[i]["learned_heads"] = value
        if sorting:
            assert attention.sort is not None
            first = passage_attention(attention.sort[attention.rows(self._sort_heads)], prompt.passage_spans)
            result = attention_sort(
                self.engine,
                lambda order: build_prompt(self.loaded.tokenizer, query, [texts[i] for i in order]),
                len(texts),
                self._sort_heads,
                rounds=self.sort_rounds,
                first_round=first,
            )
            for i, value in enumerate(result.scores):
                table[i]["attention_sort"] = value
        if self.distraction:
            found = distraction_scores(self.loaded.model, self.loaded.tokenizer, query, texts)
            for i, value in enumerate(found.distraction):
                table[i]["distraction"] = value
                table[i]["abstain_logprob"] = found.abstain_logprob[i]
        for i, value in enumerate(bm25_scores(query, texts)):
            table[i]["bm25"] = value
        for i, value in enumerate(retriever):
            if value is not None:
                table[i]["retriever"] = float(value)
        if not sentences:
            return table, None
        per_token = calibrated_per_token(attention, self.heads, prompt.passage_spans, sink_factor=self.sink_factor)
        return table, sentence_scores(prompt, per_token)

    def _check_length(self, total: int, spans: list[tuple[int, int]], indices: list[int]) -> None:
        limit = self.loaded.max_positions
        if limit is None or total <= limit:
            return
        longest = max(range(len(spans)), key=lambda i: spans[i][1] - spans[i][0])
        raise ValueError(
            f"the ranking prompt is {total} tokens but {self.loaded.name} reads at most {limit}; the longest "
            f"passage (passages[{indices[longest]}]) is {spans[longest][1] - spans[longest][0]} tokens. "
            "Pass fewer or shorter passages (split long documents into chunks)."
        )


def _check_query(query: object) -> None:
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query is empty: ranking needs a question or search query")


_default_focuser: Focuser | None = None
_default_lock = threading.Lock()


def default_focuser() -> Focuser:
    """The shared ``Focuser`` on the embedded default model, created on first use."""
    global _default_focuser
    with _default_lock:
        if _default_focuser is None:
            _default_focuser = Focuser()
        return _default_focuser


def focus(
    query: str,
    passages: Sequence[PassageLike],
    *,
    budget: int | None = None,
    ratio: float | None = None,
    top_k: int | None = None,
    threshold: float | None = None,
    order: Order = "relevance",
    tokenizer: Any = None,
    separator: str = "\n\n",
    granularity: Granularity = "passage",
) -> FocusResult:
    """``Focuser.focus`` on a shared default ``Focuser``."""
    return default_focuser().focus(
        query, passages, budget=budget, ratio=ratio, top_k=top_k, threshold=threshold,
        order=order, tokenizer=tokenizer, separator=separator, granularity=granularity,
    )
