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
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from ragfocus.engine import AttentionEngine, HeadSet
from ragfocus.fusion import FusionArgument, FusionProfile, choose_fusion, fuse
from ragfocus.head_choice import HeadsArgument, choose_heads
from ragfocus.head_profile import HeadProfile
from ragfocus.models import LoadedModel, load_model
from ragfocus.passages import PassageLike, as_passages
from ragfocus.preparation import PreparedInputs, prepare_inputs
from ragfocus.preparation_process import PreparationPool
from ragfocus.prompt import TokenizedPrompt, build_prompt
from ragfocus.scoring.attention_sort import attention_sort, check_sort_rounds, passage_attention
from ragfocus.scoring.batched import PendingSignals, PromptSignals, launch_prompt_signals
from ragfocus.scoring.distraction import (
    DistractionPrompts,
    DistractionScores,
    distraction_scores,
    launch_distraction,
    tokenize_distraction,
)
from ragfocus.scoring.heads import head_order, merge_heads
from ragfocus.scoring.lexical import bm25_scores
from ragfocus.scoring.retrieval_heads import (
    DEFAULT_SINK_FACTOR,
    Aggregate,
    calibrated_per_token,
    capture_head_attention,
    check_aggregate,
    combine_head_features,
    learned_head_features,
    score_head_set,
)
from ragfocus.selection import SelectionConfig, select
from ragfocus.sentence_scores import ScoredSentence, sentence_scores
from ragfocus.tokens import TokenCounter, token_counter
from ragfocus.types import FocusResult, Granularity, Order, Passage, PassagePart, ScoredPassage
from ragfocus.windows import WindowPlan, checked_prompts, plan_windows

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_TOKENS = 2048
"""Window size past the model's context (``Focuser(window_tokens=...)``): on pooled HotpotQA
dev 2500-2519 (200 paragraphs), 2,048-token windows put both gold paragraphs in the top 10 for
0.80 of the questions against 0.55 for 8,192-token ones (research/tune_windows.py)."""

DEFAULT_FINAL_ROUND = 20
"""Passages scored again together after a windowed ranking (``Focuser(final_round=...)``)."""

DEFAULT_BATCH_SIZE = 32
"""Inputs per batched forward pass in ``Focuser.rank_many``/``focus_many``."""

_PREPARE_AHEAD = 3
"""Batches the preparation processes tokenize ahead of the one being fused (bounds memory)."""

PREPARATION_PROCESSES = 3
"""Child processes that split each batch's tokenizing on a GPU (``host_process``), at most one
fewer than this machine's CPUs: one child tokenized a batch of 64 HotpotQA prompts in about
the time an H100 scored it, and the device waited 0.33 s for the first batch of 1,024 queries
(``docs/gpu.md``). Each child holds about 0.4 GB of memory (it imports ragfocus, and so
torch)."""

FIRST_BATCH_SHARE = 4
"""With preparation processes (on a GPU), ``rank_many``'s first batch holds ``batch_size //
FIRST_BATCH_SHARE`` inputs: the device waits for the first batch's tokenizing (0.24 s of 5.2 s
for 1,024 HotpotQA questions at batch 64 on an H100, ``docs/gpu.md``), so a smaller one starts
it sooner; the batches after it are full."""

Errors = Literal["raise", "return"]

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
        window_tokens: the size of a scoring window. Default: one prompt whenever everything
            fits the model's context (8,192 tokens for SmolLM2-135M), and windows of 2,048
            tokens (``DEFAULT_WINDOW_TOKENS``, chosen on pooled HotpotQA dev questions) past it.
            Given: any input over this many prompt tokens is windowed at this size. Passages
            that do not fit together are scored in several windows and ranked as a whole; a
            passage too long for a window is scored in parts (``ScoredPassage.parts``). Nothing
            is truncated (``ragfocus.windows``).
        final_round: past one window, the best this many passages of the windowed ranking are
            scored again together in one prompt and ranked by that final round, above the rest
            (0: off). One more prefill; see ``ragfocus.windows``.
        host_process: tokenize ``rank_many``/``focus_many`` batches (ranking and distraction
            prompts, BM25) in child processes (``ragfocus.preparation_process``; up to
            ``PREPARATION_PROCESSES``, each batch split between them), so the thread that
            launches the device's work does not share the interpreter with it. Default: on
            when the model is on CUDA. The results are the same either way; if the child
            fails, batches are prepared in the calling thread with a warning.

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
        limit = self.loaded.max_positions
        self.window_tokens: int | None = _check_window(window_tokens, limit)
        self.prompt_tokens: int | None = self.window_tokens
        """Most tokens of a ranking prompt scored in one piece."""
        if window_tokens is None:
            self.prompt_tokens = limit
            self.window_tokens = None if limit is None else min(DEFAULT_WINDOW_TOKENS, limit)
        if isinstance(final_round, bool) or not isinstance(final_round, int) or final_round < 0:
            raise ValueError(f"final_round must be an int >= 0, got {final_round!r}")
        self.final_round = final_round
        self._count = token_counter(tokenizer if tokenizer is not None else self.loaded.tokenizer)
        self._lock = threading.RLock()
        if host_process is None:
            host_process = self.engine.device.type == "cuda"
        self._preparation: PreparationPool | None = None
        if host_process:
            # Started now, so their imports run while the caller gets ready; closed with the Focuser.
            processes = max(1, min(PREPARATION_PROCESSES, (os.cpu_count() or 2) - 1))
            self._preparation = PreparationPool(self.loaded.tokenizer, processes)
            weakref.finalize(self, self._preparation.close)
        self.last_batch_seconds: dict[str, float] = {}
        """Where the last ``rank_many``/``focus_many`` call spent its time, in seconds:
        ``total``; on this thread ``prepare`` (tokenization, or waiting for the preparation
        process's), ``finish`` (lexical signals, fusion) and ``wait`` (for the device); ``device`` (the batched capture and
        distraction, waits included, on a worker thread while this one prepares and finishes
        other batches) and its ``distraction`` share; ``fill``, from the call to the first
        batch handed to the device, and ``drain``, from the last batch's device results to the
        return: the parts of ``total`` the device cannot overlap."""

    @property
    def preparation(self) -> PreparationPool | None:
        """The child processes that tokenize ``rank_many``'s batches (``host_process``), or
        ``None``. Until one is ready (a few seconds after the ``Focuser`` is made: it imports
        ragfocus), batches are tokenized in the calling thread."""
        return self._preparation

    def close(self) -> None:
        """End the preparation processes, if any; batches are then tokenized in the calling
        thread. Also done when the ``Focuser`` is garbage collected or the program exits."""
        if self._preparation is not None:
            self._preparation.close()

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
        return self._focus_result(query, ranked, found, config, count, lambda: time.perf_counter() - started)

    def rank_many(
        self,
        requests: Sequence[tuple[str, Sequence[PassageLike]]],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        errors: Errors = "raise",
    ) -> list[list[ScoredPassage]] | list[list[ScoredPassage] | Exception]:
        """``rank`` for many ``(query, passages)`` pairs, batched through the model.

        Inputs that fit one prompt are sorted by length and scored ``batch_size`` at a time:
        their prompts run as one padded forward pass, their calibration suffixes as a second
        one over the prefix cache (``AttentionEngine.suffix_attention_batch``), and their
        distraction prompts packed end to end on CUDA, in length-sorted chunks on a CPU
        (``scoring.distraction.launch_distraction``). Inputs past one prompt (windows) are
        scored one at a time. The rankings equal ``rank``'s up to floating-point rounding.

        ``errors="raise"`` raises the first bad input's error (``TypeError``/``ValueError`` as
        ``rank`` would); ``errors="return"`` puts the exception in that input's place and goes
        on, so one bad input never stops the others.
        """
        outcomes = self._rank_many(requests, sentences=False, batch_size=batch_size, errors=errors)
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
        """``focus`` for many ``(query, passages)`` pairs, ranked as ``rank_many`` ranks them.

        Each result's ``seconds`` is its share of the batch's time. ``granularity="sentence"``
        scores one input at a time (sentence scores need each prompt's per-token attention).
        """
        started = time.perf_counter()
        config = SelectionConfig(
            budget=budget, ratio=ratio, top_k=top_k, threshold=threshold, order=order, separator=separator,
            granularity=granularity,
        )
        count: TokenCounter = token_counter(tokenizer) if tokenizer is not None else self._count
        sentences = config.granularity == "sentence"
        outcomes = self._rank_many(requests, sentences=sentences, batch_size=batch_size, errors=errors)
        share = (time.perf_counter() - started) / max(len(requests), 1)
        results: list[FocusResult | Exception] = []
        for (query, _), outcome in zip(requests, outcomes):
            if isinstance(outcome, Exception):
                results.append(outcome)
                continue
            ranked, found = outcome
            results.append(self._focus_result(query, ranked, found, config, count, lambda: share))
        return results  # type: ignore[return-value]

    def _focus_result(
        self,
        query: str,
        ranked: list[ScoredPassage],
        found: dict[int, list[ScoredSentence]],
        config: SelectionConfig,
        count: TokenCounter,
        seconds: Callable[[], float],
    ) -> FocusResult:
        """Keep what fits of a ranking (``select``) and wrap it; ``seconds`` is read once the
        selection is done."""
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
            seconds=seconds(),
            budget=chosen.budget,
            order=config.order,
        )

    def _rank_many(
        self,
        requests: Sequence[tuple[str, Sequence[PassageLike]]],
        *,
        sentences: bool,
        batch_size: int,
        errors: Errors,
    ) -> list[tuple[list[ScoredPassage], dict[int, list[ScoredSentence]]] | Exception]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
        outcomes: list[Any] = [None] * len(requests)
        inputs: dict[int, tuple[str, list[Passage], _Distinct]] = {}
        for number, request in enumerate(requests):
            try:
                if not isinstance(request, tuple) or len(request) != 2:
                    raise TypeError(f"request {number} must be a (query, passages) pair, got {type(request).__name__}")
                query, passages = request
                _check_query(query)
                items = as_passages(passages)
                inputs[number] = (query, items, _distinct(items))
            except (TypeError, ValueError) as error:
                if errors == "raise":
                    raise
                outcomes[number] = error
        # Longest first: the batches' padding stays small and the largest batch comes first.
        by_length = sorted(inputs, key=lambda number: -sum(len(text) for text in inputs[number][2].texts))
        head = self._first_batch_size(batch_size, len(by_length))
        chunks = [by_length[:head]] if head else []
        chunks += [by_length[first : first + batch_size] for first in range(head, len(by_length), batch_size)]

        times = dict.fromkeys(("prepare", "wait", "finish", "device", "distraction", "fill", "drain"), 0.0)
        resolved_at: list[float] = []

        def finish(chunk: list[int], batch: _Batch, device_work: Future[_DeviceRead]) -> None:
            started = time.perf_counter()
            read = device_work.result().resolved()
            waited = time.perf_counter()
            resolved_at.append(waited)
            scored = self._finish_many([inputs[number] for number in chunk], batch, read, errors=errors)
            for number, result in zip(chunk, scored):
                _, items, distinct = inputs[number]
                outcomes[number] = result if isinstance(result, Exception) else self._assemble(items, distinct, result, sentences=sentences)
            times["wait"] += waited - started
            times["finish"] += time.perf_counter() - waited
            times["device"] += read.seconds
            times["distraction"] += read.distraction_seconds

        # A pipeline: while the device runs one batch (a worker thread that launches its
        # kernels and returns), this thread prepares the next batch (or takes it from the
        # preparation process, which works a few batches ahead) and fuses the one before.
        started = time.perf_counter()
        host = self._host_preparation([[(inputs[number][0], inputs[number][2].texts) for number in chunk] for chunk in chunks], sentences=sentences)
        with self._lock, ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragfocus-device") as device:
            pending: tuple[list[int], _Batch, Future[_DeviceRead]] | None = None
            for position, chunk in enumerate(chunks):
                prepared = time.perf_counter()
                chunk_inputs = [inputs[number] for number in chunk]
                batch = self._prepare_many(chunk_inputs, host(position), sentences=sentences, errors=errors)
                times["prepare"] += time.perf_counter() - prepared
                submitted = device.submit(self._device_many, batch)
                if position == 0:
                    times["fill"] = time.perf_counter() - started
                if pending is not None:
                    finish(*pending)
                pending = (chunk, batch, submitted)
            if pending is not None:
                finish(*pending)
            ended = time.perf_counter()
            times["total"] = ended - started
            times["drain"] = ended - resolved_at[-1] if resolved_at else 0.0
            self.last_batch_seconds = times
        logger.debug(
            "%d inputs in %d batches: %.3f s; host prepare %.3f s, finish %.3f s, waiting for the device %.3f s; "
            "device %.3f s (distraction %.3f s)",
            len(requests), len(chunks), times["total"], times["prepare"], times["finish"], times["wait"], times["device"], times["distraction"],
        )
        return outcomes

    def _first_batch_size(self, batch_size: int, count: int) -> int:
        """How many inputs ``rank_many``'s first batch holds (``FIRST_BATCH_SHARE``): a share of
        ``batch_size`` where preparation processes tokenize and there is more than one batch,
        else a full batch."""
        process = self._preparation
        if process is None or not process.ready or count <= batch_size:
            return min(batch_size, count)
        return max(1, batch_size // FIRST_BATCH_SHARE)

    def _host_preparation(self, pieces: list[list[tuple[str, list[str]]]], *, sentences: bool) -> Callable[[int], PreparedInputs]:
        """``prepare_inputs`` of each chunk, by position: from the preparation processes (a few
        chunks ahead of the caller) when one is ready and there is more than one chunk, else
        in this thread; a chunk they fail on is prepared here."""
        options: dict[str, Any] = {"prompt_tokens": self.prompt_tokens, "sentences": sentences, "distraction": self.distraction}
        def here(position: int) -> PreparedInputs:
            return prepare_inputs(self.loaded.tokenizer, pieces[position], **options)

        process = self._preparation
        if process is None or len(pieces) < 2 or not process.ready:
            return here
        futures: dict[int, Future[PreparedInputs]] = {}

        def ahead(position: int) -> PreparedInputs:
            for later in range(position, min(position + _PREPARE_AHEAD, len(pieces))):
                if later not in futures:
                    futures[later] = process.submit(pieces[later], **options)
            try:
                return futures.pop(position).result()
            except Exception as error:  # noqa: BLE001 - prepared here instead
                logger.debug("chunk %d prepared in this thread: %s", position, error)
                return here(position)

        return ahead

    def _prepare_many(
        self, inputs: list[tuple[str, list[Passage], _Distinct]], prepared: PreparedInputs, *, sentences: bool, errors: Errors
    ) -> _Batch:
        """The host's share before the device, with the tokenizing done (``prepare_inputs``):
        the one-prompt inputs go to the device together, the others (windows, sentences) are
        scored one by one."""
        results: list[_ScoredTexts | None | Exception] = [None] * len(inputs)
        batched = set(prepared.together)
        for number, (query, _, distinct) in enumerate(inputs):
            prompt = prepared.prompts[number]
            if prompt is None or number in batched:
                continue
            try:
                if isinstance(prompt, Exception):
                    raise prompt
                results[number] = self._score_texts(query, distinct.texts, distinct.retriever, sentences=sentences)
            except Exception as error:
                if errors == "raise":
                    raise
                results[number] = error
        together = [(number, prepared.prompts[number]) for number in prepared.together]
        queries = [inputs[number][0] for number in prepared.together]
        texts = [inputs[number][2].texts for number in prepared.together]
        return _Batch(results, together, queries, texts, prepared.distraction, prepared.lexical)  # type: ignore[arg-type]

    def _device_many(self, batch: _Batch) -> _DeviceRead:
        """The device's share: the batched capture and distraction of the one-prompt inputs,
        launched, their results on their way to the host (``_DeviceRead.resolved`` waits), or
        the exception that stopped them.

        Nothing here waits for the GPU (unless further sorting rounds need the first), so this
        thread goes on to launch the next batch while the GPU still runs this one.
        """
        if not batch.together:
            return _DeviceRead([], [])
        started = time.perf_counter()
        try:
            prompts = [prompt for _, prompt in batch.together]
            pending = self._launch_attention_many(prompts)
            reads: list[_WindowRead] | Callable[[], list[_WindowRead]]
            if self.sort_rounds > 1:  # the further rounds are built from the first one's result
                reads = self._window_reads(batch.queries, batch.texts, pending.result())
            else:
                reads = lambda: self._window_reads(batch.queries, batch.texts, pending.result())
            attended = time.perf_counter()
            found: list[DistractionScores | None] | Callable[[], list[DistractionScores | None]] = [None] * len(batch.together)
            if self.distraction:
                distraction = batch.distraction or tokenize_distraction(self.loaded.tokenizer, list(zip(batch.queries, batch.texts)))
                # All of a batch's prompts in as few passes as ``PACKED_TOKENS`` allows.
                found = launch_distraction(self.loaded.model, distraction, batch_size=max(1, len(distraction.sequences))).result
        except Exception as error:  # noqa: BLE001 - handed to _finish_many
            return _DeviceRead([], [], error, time.perf_counter() - started)
        ended = time.perf_counter()
        return _DeviceRead(reads, found, None, ended - started, ended - attended)

    def _finish_many(
        self, inputs: list[tuple[str, list[Passage], _Distinct]], batch: _Batch, read: _DeviceRead, *, errors: Errors
    ) -> list[_ScoredTexts | None | Exception]:
        """The host's share after the device: lexical signals and fusion per input; a batch the
        device failed on is scored one input at a time."""
        results = list(batch.results)
        if read.error is not None:
            if errors == "raise":
                raise read.error
            logger.warning(
                "a batch of %d failed (%s: %s); scoring its inputs one at a time",
                len(batch.together), type(read.error).__name__, read.error,
            )
            for number, _ in batch.together:
                query, _, distinct = inputs[number]
                try:
                    results[number] = self._score_texts(query, distinct.texts, distinct.retriever, sentences=False)
                except Exception as single:  # noqa: BLE001
                    results[number] = single
            return results
        assert isinstance(read.reads, list) and isinstance(read.distraction, list), "a read is resolved before it is finished"
        for (number, prompt), window_read, distraction, bm25 in zip(batch.together, read.reads, read.distraction, batch.lexical):
            query, _, distinct = inputs[number]
            try:
                results[number] = self._score_texts(
                    query, distinct.texts, distinct.retriever, sentences=False,
                    prepared=_Prepared(prompt, window_read, distraction, bm25),
                )
            except Exception as error:
                if errors == "raise":
                    raise
                results[number] = error
        return results

    def _rank(
        self, query: str, items: list[Passage], *, sentences: bool
    ) -> tuple[list[ScoredPassage], dict[int, list[ScoredSentence]]]:
        distinct = _distinct(items)
        scored = self._score_texts(query, distinct.texts, distinct.retriever, sentences=sentences) if distinct.texts else None
        return self._assemble(items, distinct, scored, sentences=sentences)

    def _assemble(
        self, items: list[Passage], distinct: _Distinct, scored: _ScoredTexts | None, *, sentences: bool
    ) -> tuple[list[ScoredPassage], dict[int, list[ScoredSentence]]]:
        """Spread the scores of the distinct texts over every passage, and rank."""
        names = self.signal_names
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
                signals[index]["retriever"] = float(item.score)
        order = sorted(range(len(items)), key=lambda index: (-scores[index], index))
        ranked = [
            ScoredPassage(
                index=index, rank=rank, text=items[index].text, score=scores[index], signals=signals[index],
                passage=items[index], parts=parts.get(index, ()),
            )
            for rank, index in enumerate(order)
        ]
        return ranked, found

    def _score_texts(
        self,
        query: str,
        texts: list[str],
        retriever: list[float | None],
        *,
        sentences: bool,
        prepared: _Prepared | None = None,
    ) -> _ScoredTexts:
        """Score distinct non-empty texts: in one prompt when they fit the window, else in
        windows (over-long texts in parts) put on one scale and fused together. ``prepared``
        carries what a batched run already computed for a one-prompt input."""
        started = time.perf_counter()
        whole = prepared.prompt if prepared is not None else build_prompt(self.loaded.tokenizer, query, texts)
        fits = self.prompt_tokens is None or whole.total_tokens <= self.prompt_tokens
        limit = None if fits else self.window_tokens
        plan = plan_windows(self.loaded.tokenizer, query, texts, limit)
        if fits:
            windows = [(plan.windows[0], whole)]
        else:
            windows = checked_prompts(plan, lambda window: build_prompt(self.loaded.tokenizer, query, window), limit)
        rescale = len(windows) > 1
        table: list[dict[str, float]] = [{} for _ in plan.units]
        features: list[tuple[torch.Tensor, list[int]]] = []
        unit_sentences: dict[int, list[ScoredSentence]] = {}
        slots: list[tuple[int, int]] = [(0, 1)] * len(plan.units)
        for window, prompt in windows:
            unit_texts = [plan.units[unit].text for unit in window]
            if prepared is not None and fits:
                read = prepared.read
            else:
                read = self._attention_signals(query, unit_texts, prompt, sentences=sentences)
            scale = float(len(prompt.prefix_ids)) if rescale else 1.0
            for position, unit in enumerate(window):
                table[unit] = {name: value * scale for name, value in read.table[position].items()}
                slots[unit] = (position, len(window))
                if read.sentences is not None:
                    unit_sentences[unit] = [
                        ScoredSentence(s.start, s.end, s.text, s.score * scale) for s in read.sentences[position]
                    ]
            if read.head_features is not None:
                features.append((read.head_features * scale, window))
        if features:
            merged = torch.zeros(len(self.fusion.head_weights), len(plan.units), dtype=torch.float64)
            for matrix, window in features:
                merged[:, window] = matrix.double()
            for unit, value in enumerate(combine_head_features(merged, self.fusion.head_weights)):
                table[unit]["learned_heads"] = value
        unit_texts = [unit.text for unit in plan.units]
        if self.distraction:
            found = (
                prepared.distraction
                if prepared is not None and fits and prepared.distraction is not None
                else distraction_scores(self.loaded.model, self.loaded.tokenizer, query, unit_texts)
            )
            for unit, value in enumerate(found.distraction):
                table[unit]["distraction"] = value
                table[unit]["abstain_logprob"] = found.abstain_logprob[unit]
        lexical = prepared.lexical if prepared is not None and fits else bm25_scores(query, unit_texts)
        for unit, value in enumerate(lexical):
            table[unit]["bm25"] = value
        for unit, part in enumerate(plan.units):
            if retriever[part.item] is not None:
                table[unit]["retriever"] = float(retriever[part.item])  # type: ignore[arg-type]
        fused = fuse(table, self.fusion, positional=self.positional, slots=slots if rescale else None)
        if rescale:
            for unit, value in enumerate(fused):
                table[unit]["window_score"] = value
            if self.final_round:
                self._final_round(query, plan, table, fused)
        logger.debug(
            "scored %d passages (%d units, %d windows) in %.3f s",
            len(texts), len(plan.units), len(windows), time.perf_counter() - started,
        )
        return _gather(plan, table, fused, unit_sentences, len(texts), sentences=sentences)

    def _final_round(self, query: str, plan: WindowPlan, table: list[dict[str, float]], fused: list[float]) -> None:
        """Score the best units of the windowed ranking again, together in one prompt, and
        lift them above every other unit (``table`` and ``fused`` are updated in place).

        The windows' attention signals are on one scale only approximately (each is rescaled
        by its own length); in the final prompt the finalists compete for the same attention,
        as the ten passages of a HotpotQA question do in the setting the fusion was tuned on.
        The lexical, distraction and retriever signals are the windowed run's (BM25 over
        every passage is the better estimate); ``window_score`` keeps the first-stage score.
        """
        best_unit: dict[int, int] = {}
        for unit, part in enumerate(plan.units):
            if part.item not in best_unit or fused[unit] > fused[best_unit[part.item]]:
                best_unit[part.item] = unit
        ranked = sorted(best_unit.values(), key=lambda unit: (-fused[unit], unit))[: self.final_round]
        room = self.window_tokens
        while len(ranked) > 1:
            prompt = build_prompt(self.loaded.tokenizer, query, [plan.units[unit].text for unit in ranked])
            if room is None or prompt.total_tokens <= room:
                break
            ranked = ranked[:-1]
        if len(ranked) < 2:
            return
        finalists = sorted(ranked)  # input order, as every prompt
        prompt = build_prompt(self.loaded.tokenizer, query, [plan.units[unit].text for unit in finalists])
        read = self._attention_signals(query, [plan.units[unit].text for unit in finalists], prompt, sentences=False)
        rows = []
        for position, unit in enumerate(finalists):
            row = dict(table[unit])
            row.update(read.table[position])
            rows.append(row)
        if read.head_features is not None:
            for row, value in zip(rows, combine_head_features(read.head_features, self.fusion.head_weights)):
                row["learned_heads"] = value
        final = fuse(rows, self.fusion, positional=self.positional)
        chosen = set(finalists)
        others = [fused[unit] for unit in range(len(fused)) if unit not in chosen]
        lift = max(others) - min(final) + 1.0 if others else 0.0
        for row, unit, value in zip(rows, finalists, final):
            table[unit] = row
            fused[unit] = value + lift

    def _heads_read(self) -> HeadSet:
        """Every head a ranking pass captures: retrieval, sorting and learned-weight heads."""
        read = merge_heads(self.heads, self._sort_heads) if self.sort_rounds > 0 else self.heads
        if self.fusion.head_weights:
            read = merge_heads(read, self.fusion.weighted_head_set)
        return read

    def _launch_attention_many(self, prompts: list[TokenizedPrompt]) -> PendingSignals:
        """One batched capture (``AttentionEngine.suffix_attention_batch``) and the signals
        reduced on the device (``ragfocus.scoring.batched``), launched; the results are on
        their way to the host."""
        sorting = self.sort_rounds > 0
        read = self._heads_read()
        order = head_order(read)  # on the host: no device index tensors to read back per layer
        suffixes = [[p.query_ids, p.null_ids] + ([p.sort_ids] if sorting else []) for p in prompts]
        rows = [[p.query_rows, p.null_rows] + ([p.sort_rows] if sorting else []) for p in prompts]
        captured = self.engine.suffix_attention_batch([p.prefix_ids for p in prompts], suffixes, rows=rows, heads=read)
        return launch_prompt_signals(
            captured, order, [p.passage_spans for p in prompts],
            heads=self.heads,
            weights=self.fusion.head_weights,
            sort_heads=self._sort_heads if sorting else None,
            sink_factor=self.sink_factor,
            aggregate=self.aggregate,
        )

    def _window_reads(self, queries: list[str], texts: list[list[str]], found: list[PromptSignals]) -> list[_WindowRead]:
        """The per-passage signal tables of ``_launch_attention_many``'s results (and, with
        more than one sorting round, the further rounds)."""
        sorting = self.sort_rounds > 0
        reads = []
        for query, passage_texts, signals in zip(queries, texts, found):
            table = [
                {"retrieval_heads": signals.calibrated[i], "query_attention": signals.query_mass[i], "null_attention": signals.null_mass[i]}
                for i in range(len(passage_texts))
            ]
            if sorting:
                assert signals.sort is not None
                sort_scores = signals.sort
                if self.sort_rounds > 1:
                    sort_scores = attention_sort(
                        self.engine,
                        lambda order, q=query, t=passage_texts: build_prompt(self.loaded.tokenizer, q, [t[i] for i in order]),
                        len(passage_texts),
                        self._sort_heads,
                        rounds=self.sort_rounds,
                        first_round=signals.sort,
                    ).scores
                for i, value in enumerate(sort_scores):
                    table[i]["attention_sort"] = value
            if self.fusion.head_weights:
                assert signals.learned is not None
                for i, value in enumerate(signals.learned):  # combined on the device
                    table[i]["learned_heads"] = value
            reads.append(_WindowRead(table, None, None))
        return reads

    def _attention_signals(self, query: str, texts: list[str], prompt: TokenizedPrompt, *, sentences: bool) -> _WindowRead:
        """The attention signals of the passages of one prompt (prompt order), raw."""
        sorting = self.sort_rounds > 0
        read = self._heads_read()
        attention = capture_head_attention(self.engine, prompt, read, sort=sorting)
        heads = score_head_set(attention, self.heads, prompt.passage_spans, sink_factor=self.sink_factor, aggregate=self.aggregate)
        table = [
            {"retrieval_heads": heads.calibrated[i], "query_attention": heads.query_mass[i], "null_attention": heads.null_mass[i]}
            for i in range(len(texts))
        ]
        features = None
        if self.fusion.head_weights:
            features = learned_head_features(attention, self.fusion.head_weights, prompt.passage_spans, sink_factor=self.sink_factor)
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
        per_passage = None
        if sentences:
            per_token = calibrated_per_token(attention, self.heads, prompt.passage_spans, sink_factor=self.sink_factor)
            per_passage = sentence_scores(prompt, per_token)
        return _WindowRead(table, features, per_passage)


@dataclass(frozen=True)
class _Distinct:
    """The distinct non-empty texts of a passage list (a duplicate is scored once)."""

    texts: list[str]
    retriever: list[float | None]
    """Per text, the best retriever score among its copies (what the fusion reads)."""
    slot_of: dict[int, int]
    """Passage index -> index into ``texts``; empty passages are absent."""


def _distinct(items: list[Passage]) -> _Distinct:
    distinct: dict[str, int] = {}
    best_retriever: list[float | None] = []
    slot_of: dict[int, int] = {}
    for index, item in enumerate(items):
        if not item.text.strip():
            continue
        slot = slot_of[index] = distinct.setdefault(item.text, len(distinct))
        if slot == len(best_retriever):
            best_retriever.append(item.score)
        elif item.score is not None:
            known = best_retriever[slot]
            best_retriever[slot] = item.score if known is None else max(known, item.score)
    return _Distinct(list(distinct), best_retriever, slot_of)


@dataclass(frozen=True)
class _WindowRead:
    table: list[dict[str, float]]
    head_features: torch.Tensor | None
    sentences: list[list[ScoredSentence]] | None


@dataclass(frozen=True)
class _Prepared:
    """What a batched run computed for one input that fits one prompt."""

    prompt: TokenizedPrompt
    read: _WindowRead
    distraction: DistractionScores | None
    lexical: list[float]
    """BM25 of the texts, computed with the tokenizing."""


@dataclass(frozen=True)
class _Batch:
    """One batch of ``rank_many`` after the host's first share (``Focuser._prepare_many``)."""

    results: list[_ScoredTexts | None | Exception]
    """Per input: scored already (windows, sentences), an error, or ``None`` (empty or batched)."""
    together: list[tuple[int, TokenizedPrompt]]
    """The inputs scored as one batch on the device, with their prompts."""
    queries: list[str]
    texts: list[list[str]]
    distraction: DistractionPrompts | None
    """The distraction prompts, tokenized on the host (``None`` without distraction)."""
    lexical: list[list[float]]
    """BM25 of each ``together`` input's texts, computed with the tokenizing."""


@dataclass(frozen=True)
class _DeviceRead:
    """The device's share of a batch (``Focuser._device_many``), or the error that stopped it.

    ``reads`` and ``distraction`` may still be waiting for the device: functions that wait and
    return them. ``resolved`` calls them.
    """

    reads: list[_WindowRead] | Callable[[], list[_WindowRead]]
    distraction: list[DistractionScores | None] | Callable[[], list[DistractionScores | None]]
    error: Exception | None = None
    seconds: float = 0.0
    """Wall time of the worker thread's share (launching, and any wait inside it)."""
    distraction_seconds: float = 0.0

    def resolved(self) -> _DeviceRead:
        """The same read with its results on the host; an error raised while waiting for
        them (an asynchronous CUDA error, say) becomes ``error``."""
        if self.error is not None:
            return self
        try:
            reads = self.reads() if callable(self.reads) else self.reads
            distraction = self.distraction() if callable(self.distraction) else self.distraction
        except Exception as error:  # noqa: BLE001 - handed to _finish_many
            return replace(self, reads=[], distraction=[], error=error)
        return replace(self, reads=reads, distraction=distraction)


@dataclass(frozen=True)
class _ScoredTexts:
    signals: list[dict[str, float]]
    scores: list[float]
    parts: list[tuple[PassagePart, ...]]
    sentences: list[list[ScoredSentence]]


def _gather(
    plan: WindowPlan,
    table: list[dict[str, float]],
    fused: list[float],
    unit_sentences: dict[int, list[ScoredSentence]],
    count: int,
    *,
    sentences: bool,
) -> _ScoredTexts:
    """Per text: its best unit's signals and score, its parts (when it has several) and its
    sentences (offsets of every part moved to the whole text)."""
    by_text: list[list[int]] = [[] for _ in range(count)]
    for unit, part in enumerate(plan.units):
        by_text[part.item].append(unit)
    signals, scores, parts, found = [], [], [], []
    for units in by_text:
        best = max(units, key=lambda unit: (fused[unit], -unit))
        signals.append(table[best])
        scores.append(fused[best])
        parts.append(
            tuple(PassagePart(plan.units[u].start, plan.units[u].end, fused[u], table[u]) for u in units)
            if len(units) > 1 else ()
        )
        if sentences:
            found.append([
                ScoredSentence(s.start + plan.units[u].start, s.end + plan.units[u].start, s.text, s.score)
                for u in units for s in unit_sentences.get(u, [])
            ])
    return _ScoredTexts(signals, scores, parts, found)


def _check_window(window_tokens: object, max_positions: int | None) -> int | None:
    if window_tokens is None:
        return None
    if isinstance(window_tokens, bool) or not isinstance(window_tokens, int):
        raise TypeError(f"window_tokens must be an int, got {window_tokens!r}")
    if window_tokens < 64:
        raise ValueError(f"window_tokens must be at least 64, got {window_tokens}")
    if max_positions is not None and window_tokens > max_positions:
        raise ValueError(f"window_tokens={window_tokens} is more than the model reads ({max_positions} positions)")
    return window_tokens


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
