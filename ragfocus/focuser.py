"""``Focuser``: rank passages by the scorer's attention, then keep what fits.

>>> from ragfocus import Focuser                                            # doctest: +SKIP
>>> focuser = Focuser()             # embedded SmolLM2-135M-Instruct, loaded once
>>> result = focuser.focus("Who wrote Hamlet?", passages, budget=300)
>>> [p.index for p in result.kept], result.tokens_in, result.tokens_out
([3, 0], 1480, 271)

A thin facade over the staged pipeline (``ragfocus.pipeline``: prepare -> device -> finish),
``ragfocus.selection`` and ``ragfocus.ordering``. ``rank`` is ``rank_many`` of one request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ragfocus.engine import AttentionEngine, HeadSet
from ragfocus.fusion import FusionArgument, FusionProfile, choose_fusion
from ragfocus.head_choice import HeadsArgument, choose_heads
from ragfocus.head_profile import HeadProfile
from ragfocus.models import LoadedModel, load_model
from ragfocus.passages import PassageLike
from ragfocus.pipeline import SIGNAL_NAMES, DeviceStage, Errors, Pipeline, Ranking, Scoring, parse_requests
from ragfocus.preparation_process import PREPARATION_PROCESSES, PreparationPool
from ragfocus.scoring.attention_sort import check_sort_rounds
from ragfocus.scoring.retrieval_heads import DEFAULT_SINK_FACTOR, Aggregate, check_aggregate
from ragfocus.selection import SelectionConfig, focus_result
from ragfocus.signals import ATTENTION_SORT
from ragfocus.tokens import TokenCounter, token_counter
from ragfocus.types import FocusResult, Granularity, Order, ScoredPassage
from ragfocus.windows import DEFAULT_FINAL_ROUND, window_limits

__all__ = ["DEFAULT_BATCH_SIZE", "SIGNAL_NAMES", "Focuser", "default_focuser", "focus"]

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
"""Requests per batched forward pass in ``Focuser.rank_many``/``focus_many``."""


class Focuser:
    """Ranks and prunes retrieved passages with a small causal LM's attention.

    Args:
        model: ``None`` for the embedded default (SmolLM2-135M-Instruct), a Hugging Face hub
            id or local path, or an already ``LoadedModel``.
        heads: which attention heads to read. ``None``: the model's bundled head profile, else
            the middle half of the layers with a warning; ``"auto"``: detect a profile once and
            cache it; a ``HeadProfile`` or its JSON path; or ``{layer: heads}``.
        tokenizer: the generator's tokenizer for budgets (HF tokenizer, name, or callable
            ``str -> int``); default the scorer's own.
        device: ``None`` picks CUDA when present, else CPU.
        sink_factor: content-free attention above this multiple of the median masks a token
            as a sink; ``None`` masks nothing.
        aggregate: ``"mean"`` (default) scores a passage by calibrated attention per token,
            ``"sum"`` by its total (ICR's choice, which also rewards length).
        fusion: how signals become one relevance. ``None``: the model's bundled fusion
            profile (weights tuned on HotpotQA dev 0-2999), else retrieval heads alone;
            ``"heads"``: retrieval heads alone; a ``FusionProfile`` or its JSON path.
        sort_rounds: rounds of attention sorting (0 = off; default: the fusion profile's).
            Round one is read from the ranking pass; each further round costs one prefill.
        distraction: ``True`` adds the distracting effect of each passage (Amiraz et al.,
            ACL 2025): one more pass over the passages, each alone, which about doubles the
            cost of ranking, for the fusion profile's distraction weight. Default (``None`` or
            ``False``): left out, so ranking costs one forward pass; its cost and gain on
            validation questions are in docs/benchmarks.md.
        positional: remove the model's positional attention bias (the fusion profile's
            ``position_bias``) before fusing; default: what tuning chose for the profile.
        window_tokens: past the model's context (default) or this many prompt tokens (given),
            passages are scored in windows (default ``windows.DEFAULT_WINDOW_TOKENS``) and
            ranked as a whole; a passage too long for a window is scored in parts
            (``ScoredPassage.parts``). Nothing is truncated (``ragfocus.windows``).
        final_round: past one window, the best this many passages are scored again together
            in one prompt and ranked above the rest (0: off).
        host_process: tokenize the batches of ``rank_many``/``focus_many`` in child processes
            (``ragfocus.preparation_process``); default: on CUDA. Same results either way; a
            single request never uses them.

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
        window_tokens: int | None = None,
        final_round: int = DEFAULT_FINAL_ROUND,
        host_process: bool | None = None,
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
        check_aggregate(aggregate)
        self.fusion: FusionProfile = choose_fusion(self.loaded, fusion)
        rounds = self.fusion.sort_rounds if sort_rounds is None else sort_rounds
        check_sort_rounds(rounds)
        if self.fusion.uses(ATTENTION_SORT) and rounds == 0:
            raise ValueError("the fusion profile weights attention_sort: sort_rounds must be at least 1 (or use fusion='heads')")
        self.sort_heads: HeadSet = self.fusion.sort_head_set if self.fusion.sort_heads else self.heads
        """The heads attention sorting reads."""
        self.engine.validate_heads(self.sort_heads)
        if self.fusion.head_weights:
            self.engine.validate_heads(self.fusion.weighted_head_set)
        prompt_tokens, window = window_limits(window_tokens, self.loaded.max_positions)
        if isinstance(final_round, bool) or not isinstance(final_round, int) or final_round < 0:
            raise ValueError(f"final_round must be an int >= 0, got {final_round!r}")
        self.scoring = Scoring(
            heads=self.heads, sort_heads=self.sort_heads, fusion=self.fusion, sink_factor=sink_factor,
            aggregate=aggregate, sort_rounds=rounds, distraction=bool(distraction),
            positional=self.fusion.calibrate_positions if positional is None else bool(positional),
            prompt_tokens=prompt_tokens, window_tokens=window, final_round=final_round,
        )
        """Every setting above, as the pipeline's stages read them."""
        self.token_count: TokenCounter = token_counter(tokenizer if tokenizer is not None else self.loaded.tokenizer)
        """Counts tokens of the generator's tokenizer (budgets)."""
        self.lock = threading.RLock()
        """Held while a call runs the model; hold it to run ``engine`` yourself between calls."""
        preparation = None
        if self.engine.device.type == "cuda" if host_process is None else host_process:
            # Started now, so their imports run while the caller gets ready; closed with the Focuser.
            preparation = PreparationPool(self.loaded.tokenizer, max(1, min(PREPARATION_PROCESSES, (os.cpu_count() or 2) - 1)))
            weakref.finalize(self, preparation.close)
        self.pipeline = Pipeline(DeviceStage(self.loaded, self.engine, self.scoring), preparation)

    sink_factor = property(lambda self: self.scoring.sink_factor)
    aggregate = property(lambda self: self.scoring.aggregate)
    sort_rounds = property(lambda self: self.scoring.sort_rounds)
    distraction = property(lambda self: self.scoring.distraction)
    positional = property(lambda self: self.scoring.positional)
    window_tokens = property(lambda self: self.scoring.window_tokens)
    prompt_tokens = property(lambda self: self.scoring.prompt_tokens)
    final_round = property(lambda self: self.scoring.final_round)
    signal_names = property(lambda self: self.scoring.signal_names, doc="The signals every non-empty passage gets (``retriever`` aside).")
    heads_read = property(lambda self: self.scoring.heads_read, doc="Every head a ranking pass captures.")

    @property
    def preparation(self) -> PreparationPool | None:
        """The child processes that tokenize ``rank_many``'s batches (``host_process``), or
        ``None``. Until one is ready, batches are tokenized in the calling thread."""
        return self.pipeline.preparation

    @property
    def last_batch_seconds(self) -> dict[str, float]:
        """Where the last call spent its time, in seconds: ``total``; on this thread ``prepare``
        (tokenizing, windows), ``finish`` (lexical signals, fusion) and ``wait`` (for the
        device); ``device`` (the batched capture and distraction, on a worker thread when there
        is more than one batch) and its ``distraction`` share; ``fill``, from the call to the
        first batch handed to the device, and ``drain``, from the last batch's device results to
        the return."""
        return self.pipeline.last_batch_seconds

    def close(self) -> None:
        """End the preparation processes, if any (also done when the ``Focuser`` is garbage
        collected or the program exits)."""
        if self.pipeline.preparation is not None:
            self.pipeline.preparation.close()

    def rank(self, query: str, passages: Sequence[PassageLike]) -> list[ScoredPassage]:
        """Score every passage; best first, nothing dropped. ``rank_many`` of one request.

        Empty or whitespace-only passages are not shown to the model: they get score
        ``-inf`` and NaN signals and rank last.

        Raises:
            TypeError: ``query`` is not a str, or a passage is not a str/Passage/Document.
            ValueError: the query is empty, or the prompt exceeds the model's context.
        """
        return self.rank_many([(query, passages)], batch_size=1)[0]  # type: ignore[return-value]

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
        """Rank, keep what fits and arrange it: ``focus_many`` of one request; the options are
        ``SelectionConfig``'s, ``tokenizer`` the generator's (default the ``Focuser``'s).

        ``granularity="sentence"`` prunes inside passages too: the sentences that receive the
        least calibrated attention go first until the budget holds (AttentionRAG); a kept
        passage's ``text`` is then what is left of it (``passage.text`` stays whole). A budget
        below every passage keeps nothing and logs a warning.
        """
        return self.focus_many(  # type: ignore[return-value]
            [(query, passages)], budget=budget, ratio=ratio, top_k=top_k, threshold=threshold, order=order,
            tokenizer=tokenizer, separator=separator, granularity=granularity, batch_size=1,
        )[0]

    def rank_many(
        self,
        requests: Sequence[tuple[str, Sequence[PassageLike]]],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        errors: Errors = "raise",
    ) -> list[list[ScoredPassage]] | list[list[ScoredPassage] | Exception]:
        """``rank`` for many ``(query, passages)`` pairs, ``batch_size`` prompts per batched
        forward pass (``ragfocus.pipeline``). ``errors="raise"`` raises the first bad
        request's error; ``errors="return"`` puts the exception in its place and goes on."""
        outcomes = self._rankings(parse_requests(requests, errors), sentences=False, batch_size=batch_size, errors=errors)
        return [outcome if isinstance(outcome, Exception) else outcome[0] for outcome in outcomes]  # type: ignore[return-value]

    def focus_many(
        self,
        requests: Sequence[tuple[str, Sequence[PassageLike]]],
        *,
        budget: int | None = None,
        ratio: float | None = None,
        top_k: int | None = None,
        threshold: float | None = None,
        order: Order = "relevance",
        tokenizer: Any = None,
        separator: str = "\n\n",
        granularity: Granularity = "passage",
        batch_size: int = DEFAULT_BATCH_SIZE,
        errors: Errors = "raise",
    ) -> list[FocusResult] | list[FocusResult | Exception]:
        """``focus`` for many ``(query, passages)`` pairs, ranked as ``rank_many`` ranks them;
        each result's ``seconds`` is its share of the batch's time."""
        started = time.perf_counter()
        config = SelectionConfig(budget=budget, ratio=ratio, top_k=top_k, threshold=threshold, order=order,
                                 separator=separator, granularity=granularity)
        count = token_counter(tokenizer) if tokenizer is not None else self.token_count
        parsed = parse_requests(requests, errors)
        outcomes = self._rankings(parsed, sentences=config.granularity == "sentence", batch_size=batch_size, errors=errors)
        results = [
            outcome if isinstance(outcome, Exception)
            else focus_result(request.query, *outcome, config, count, self.fusion.slot_strength)  # type: ignore[union-attr]
            for request, outcome in zip(parsed, outcomes)
        ]
        share = (time.perf_counter() - started) / max(len(requests), 1)
        return [result if isinstance(result, Exception) else replace(result, seconds=share) for result in results]  # type: ignore[return-value]

    def _rankings(self, requests: list[Any], *, sentences: bool, batch_size: int, errors: Errors) -> list[Ranking | Exception]:
        with self.lock:
            return self.pipeline.run(requests, sentences=sentences, batch_size=batch_size, errors=errors)


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
    """``Focuser.focus`` on a shared default ``Focuser`` (``default_focuser``)."""
    return default_focuser().focus(
        query, passages, budget=budget, ratio=ratio, top_k=top_k, threshold=threshold, order=order,
        tokenizer=tokenizer, separator=separator, granularity=granularity,
    )
