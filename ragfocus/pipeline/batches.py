"""The staged pipeline every ranking goes through: prepare -> device -> finish.

``Pipeline.run`` cuts the checked requests into batches, longest first. For each batch:

1. **prepare** (host): the ranking prompts, the distraction prompts and BM25
   (``ragfocus.preparation``; in child processes when a ``PreparationPool`` is given);
   requests too long for one prompt are scored in windows here (``pipeline.texts``);
2. **device**: one batched capture and its signals, and the distraction pass, launched
   (``pipeline.device``);
3. **finish** (host): each request's signals fused (``pipeline.texts``) and spread over its
   passages (``pipeline.assemble``).

With more than one batch the device stage runs on a worker thread, so the host prepares the
next batch and finishes the one before while the device runs. A single request (``rank``)
is the one-batch case: no thread, no child process, the same stages in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from ragfocus.pipeline.assemble import Ranking, assemble
from ragfocus.pipeline.device import DeviceStage, Pending, PromptRead
from ragfocus.pipeline.requests import Errors, Request
from ragfocus.pipeline.texts import DeviceResult, ScoredTexts, score_texts
from ragfocus.preparation import PreparedInputs, prepare_inputs
from ragfocus.preparation_process import PreparationPool
from ragfocus.prompt import TokenizedPrompt
from ragfocus.scoring.distraction import DistractionScores

logger = logging.getLogger(__name__)

PREPARE_AHEAD = 3
"""Batches the preparation processes tokenize ahead of the one being finished (bounds memory)."""

FIRST_BATCH_SHARE = 4
"""With preparation processes, the first batch holds ``batch_size // FIRST_BATCH_SHARE``
requests: the device waits for the first batch's tokenizing, so a smaller one starts it
sooner; the batches after it are full (``docs/gpu.md``)."""

TIMES = ("prepare", "wait", "finish", "device", "distraction", "fill", "drain")


@dataclass(frozen=True)
class _Batch:
    """One batch after the prepare stage."""

    requests: list[Request]
    host: PreparedInputs
    results: list[ScoredTexts | None | Exception]
    """Per request: scored already (windows), its error, or ``None`` (no text, or on the device)."""
    sentences: bool


@dataclass(frozen=True)
class _DeviceRead:
    """The device stage's share of a batch, or the error that stopped it. ``resolved`` waits
    for the results; an error raised while waiting (an asynchronous CUDA error) becomes
    ``error``."""

    reads: Pending[list[PromptRead]] | list[PromptRead]
    distraction: Pending[list[DistractionScores | None]] | list[DistractionScores | None]
    error: Exception | None = None
    seconds: float = 0.0
    distraction_seconds: float = 0.0

    def resolved(self) -> _DeviceRead:
        if self.error is not None:
            return self
        try:
            reads = self.reads() if callable(self.reads) else self.reads
            distraction = self.distraction() if callable(self.distraction) else self.distraction
        except Exception as error:  # noqa: BLE001 - handed to the finish stage
            return replace(self, reads=[], distraction=[], error=error)
        return replace(self, reads=reads, distraction=distraction)


class Pipeline:
    """Runs checked requests through the stages; one call at a time (the ``Focuser`` locks)."""

    def __init__(self, stage: DeviceStage, preparation: PreparationPool | None = None) -> None:
        self.stage = stage
        self.preparation = preparation
        self.last_batch_seconds: dict[str, float] = {}
        """Where the last ``run`` spent its time (see ``Focuser.last_batch_seconds``)."""

    def run(
        self, requests: Sequence[Request | Exception], *, sentences: bool, batch_size: int, errors: Errors
    ) -> list[Ranking | Exception]:
        """Rank every request; a request given as an exception stays one."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        outcomes: list[Ranking | Exception | None] = [r if isinstance(r, Exception) else None for r in requests]
        valid = [number for number, request in enumerate(requests) if isinstance(request, Request)]
        # Longest first: the batches' padding stays small and the largest batch comes first.
        valid.sort(key=lambda number: -sum(len(text) for text in requests[number].distinct.texts))  # type: ignore[union-attr]
        head = self._first_batch_size(batch_size, len(valid))
        chunks = [valid[:head]] if head else []
        chunks += [valid[first : first + batch_size] for first in range(head, len(valid), batch_size)]
        batches = [[requests[number] for number in chunk] for chunk in chunks]
        times = dict.fromkeys(TIMES, 0.0)
        resolved_at: list[float] = []
        names = self.stage.scoring.signal_names

        def finish(chunk: list[int], batch: _Batch, device_work: Callable[[], _DeviceRead]) -> None:
            started = time.perf_counter()
            read = device_work().resolved()
            waited = time.perf_counter()
            resolved_at.append(waited)
            for number, request, result in zip(chunk, batch.requests, self._finish(batch, read, errors=errors)):
                outcomes[number] = result if isinstance(result, Exception) else assemble(request, result, names, sentences=sentences)
            times["wait"] += waited - started
            times["finish"] += time.perf_counter() - waited
            times["device"] += read.seconds
            times["distraction"] += read.distraction_seconds

        started = time.perf_counter()
        host = self._host_preparation([[(r.query, r.distinct.texts) for r in batch] for batch in batches])  # type: ignore[union-attr]
        if len(chunks) == 1:  # one batch (a single request): the stages in order, no thread
            batch = self._prepare(batches[0], host(0), sentences=sentences, errors=errors)  # type: ignore[arg-type]
            times["prepare"] = times["fill"] = time.perf_counter() - started
            device_read = self._device(batch)
            finish(chunks[0], batch, lambda: device_read)
        elif chunks:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragfocus-device") as device:
                pending: tuple[list[int], _Batch, Future[_DeviceRead]] | None = None
                for position, chunk in enumerate(chunks):
                    prepared = time.perf_counter()
                    batch = self._prepare(batches[position], host(position), sentences=sentences, errors=errors)  # type: ignore[arg-type]
                    times["prepare"] += time.perf_counter() - prepared
                    submitted = device.submit(self._device, batch)
                    if position == 0:
                        times["fill"] = time.perf_counter() - started
                    if pending is not None:
                        finish(pending[0], pending[1], pending[2].result)
                    pending = (chunk, batch, submitted)
                if pending is not None:
                    finish(pending[0], pending[1], pending[2].result)
        ended = time.perf_counter()
        times["total"] = ended - started
        times["drain"] = ended - resolved_at[-1] if resolved_at else 0.0
        self.last_batch_seconds = times
        logger.debug(
            "%d requests in %d batches: %.3f s; host prepare %.3f s, finish %.3f s, waiting for the device %.3f s; "
            "device %.3f s (distraction %.3f s)",
            len(requests), len(chunks), times["total"], times["prepare"], times["finish"], times["wait"], times["device"],
            times["distraction"],
        )
        return outcomes  # type: ignore[return-value]

    def _first_batch_size(self, batch_size: int, count: int) -> int:
        """A share of ``batch_size`` (``FIRST_BATCH_SHARE``) where preparation processes
        tokenize and there is more than one batch, else a full batch."""
        process = self.preparation
        if process is None or not process.ready or count <= batch_size:
            return min(batch_size, count)
        return max(1, batch_size // FIRST_BATCH_SHARE)

    def _host_preparation(self, pieces: list[list[tuple[str, list[str]]]]) -> Callable[[int], PreparedInputs]:
        """``prepare_inputs`` of each batch, by position: from the preparation processes (a few
        batches ahead) when they are ready and there is more than one batch, else in this
        thread; a batch they fail on is prepared here."""
        scoring = self.stage.scoring
        options = {"prompt_tokens": scoring.prompt_tokens, "sentences": False, "distraction": scoring.distraction}

        def here(position: int) -> PreparedInputs:
            return prepare_inputs(self.stage.loaded.tokenizer, pieces[position], **options)  # type: ignore[arg-type]

        process = self.preparation
        if process is None or len(pieces) < 2 or not process.ready:
            return here
        futures: dict[int, Future[PreparedInputs]] = {}

        def ahead(position: int) -> PreparedInputs:
            for later in range(position, min(position + PREPARE_AHEAD, len(pieces))):
                if later not in futures:
                    futures[later] = process.submit(pieces[later], **options)  # type: ignore[arg-type]
            try:
                return futures.pop(position).result()
            except Exception as error:  # noqa: BLE001 - prepared here instead
                logger.debug("batch %d prepared in this thread: %s", position, error)
                return here(position)

        return ahead

    def _prepare(self, requests: list[Request], host: PreparedInputs, *, sentences: bool, errors: Errors) -> _Batch:
        """The prepare stage past the tokenizing: requests that fit one prompt go to the device
        together; longer ones are scored here in windows."""
        results: list[ScoredTexts | None | Exception] = [None] * len(requests)
        together = set(host.together)
        for number, request in enumerate(requests):
            prompt = host.prompts[number]
            if prompt is None or number in together:
                continue
            try:
                if isinstance(prompt, Exception):
                    raise prompt
                results[number] = self._score_alone(request, sentences=sentences)
            except Exception as error:
                if errors == "raise":
                    raise
                results[number] = error
        return _Batch(requests, host, results, sentences)

    def _device(self, batch: _Batch) -> _DeviceRead:
        """The device stage of the requests that fit one prompt, launched (nothing here waits
        for a GPU, unless further sorting rounds need the first)."""
        if not batch.host.together:
            return _DeviceRead([], [])
        started = time.perf_counter()
        try:
            prompts: list[TokenizedPrompt] = [batch.host.prompts[number] for number in batch.host.together]  # type: ignore[misc]
            queries = [batch.requests[number].query for number in batch.host.together]
            texts = [batch.requests[number].distinct.texts for number in batch.host.together]
            reads = self.stage.launch_reads(prompts, queries, texts, sentences=batch.sentences)
            attended = time.perf_counter()
            distraction = self.stage.launch_distraction(queries, texts, batch.host.distraction)
        except Exception as error:  # noqa: BLE001 - handed to the finish stage
            return _DeviceRead([], [], error, time.perf_counter() - started)
        ended = time.perf_counter()
        return _DeviceRead(reads, distraction, None, ended - started, ended - attended)

    def _finish(self, batch: _Batch, read: _DeviceRead, *, errors: Errors) -> list[ScoredTexts | None | Exception]:
        """The finish stage: each request's signals fused; a batch the device failed on is
        scored one request at a time."""
        results = list(batch.results)
        if read.error is not None:
            if errors == "raise":
                raise read.error
            logger.warning(
                "a batch of %d failed (%s: %s); scoring its requests one at a time",
                len(batch.host.together), type(read.error).__name__, read.error,
            )
            for number in batch.host.together:
                try:
                    results[number] = self._score_alone(batch.requests[number], sentences=batch.sentences)
                except Exception as single:  # noqa: BLE001
                    results[number] = single
            return results
        assert isinstance(read.reads, list) and isinstance(read.distraction, list), "a read is resolved before it is finished"
        for number, prompt_read, distraction, lexical in zip(batch.host.together, read.reads, read.distraction, batch.host.lexical):
            request = batch.requests[number]
            prompt = batch.host.prompts[number]
            assert isinstance(prompt, TokenizedPrompt)
            try:
                results[number] = score_texts(
                    self.stage, request.query, request.distinct.texts, request.distinct.retriever,
                    sentences=batch.sentences, done=DeviceResult(prompt, prompt_read, distraction, lexical),
                )
            except Exception as error:
                if errors == "raise":
                    raise
                results[number] = error
        return results

    def _score_alone(self, request: Request, *, sentences: bool) -> ScoredTexts | None:
        if not request.distinct.texts:
            return None
        return score_texts(self.stage, request.query, request.distinct.texts, request.distinct.retriever, sentences=sentences)
