"""The device stage: what the model computes for a batch of ranking prompts.

One batched capture reads every prompt's query, content-free and attention-sorting suffixes
over its passages (``AttentionEngine.suffix_attention_batch``; ICR, Chen et al., ICLR 2025;
attention sorting, Peysakhovich & Lerer, 2023), and the per-passage signals are reduced on the
device (``ragfocus.scoring.batched``). The distraction prompts (Amiraz et al., ACL 2025) run as
a second batch (``ragfocus.scoring.distraction``). Both are launched without waiting: a
``Pending`` returns the results once the device has them. A single request, a window of a long
input and a batch of 64 all take this one path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from ragfocus.engine import AttentionEngine
from ragfocus.models import LoadedModel
from ragfocus.pipeline.settings import Scoring
from ragfocus.prompt import TokenizedPrompt, build_prompt
from ragfocus.scoring.attention_sort import attention_sort
from ragfocus.scoring.batched import PromptSignals, launch_prompt_signals
from ragfocus.scoring.distraction import DistractionPrompts, DistractionScores, launch_distraction, tokenize_distraction
from ragfocus.scoring.heads import head_order
from ragfocus.sentence_scores import ScoredSentence, sentence_scores
from ragfocus.signals import ATTENTION_SORT, LEARNED_HEADS, NULL_ATTENTION, QUERY_ATTENTION, RETRIEVAL_HEADS, SignalTable

T = TypeVar("T")
Pending = Callable[[], T]
"""A launched result: calling it waits for the device and returns the value."""


@dataclass(frozen=True)
class PromptRead:
    """The attention signals of one prompt's passages (prompt order), raw."""

    signals: SignalTable
    """Per passage: ``retrieval_heads``, ``query_attention``, ``null_attention`` and, when
    read, ``learned_heads`` and ``attention_sort``."""
    head_features: torch.Tensor | None
    """With ``features=True``: the learned heads' own passage scores (heads, passages)."""
    sentences: list[list[ScoredSentence]] | None
    """With ``sentences=True``: per passage, its sentences' calibrated attention."""
    per_token: torch.Tensor | None = None
    """With ``sentences=True``: per prefix token, the retrieval heads' calibrated attention
    (query minus content-free), NaN at sinks."""


class DeviceStage:
    """Launches a ``Focuser``'s device work; holds no state between calls."""

    def __init__(self, loaded: LoadedModel, engine: AttentionEngine, scoring: Scoring) -> None:
        self.loaded = loaded
        self.engine = engine
        self.scoring = scoring

    def launch_reads(
        self,
        prompts: Sequence[TokenizedPrompt],
        queries: Sequence[str],
        texts: Sequence[Sequence[str]],
        *,
        sentences: bool = False,
        features: bool = False,
    ) -> Pending[list[PromptRead]]:
        """The batched capture of ``prompts`` (one per ``(query, texts)``) and its signals,
        launched. More than one sorting round waits for the first before returning."""
        if not prompts:
            return lambda: []
        scoring = self.scoring
        read = scoring.heads_read
        suffixes = [[p.query_ids, p.null_ids] + ([p.sort_ids] if scoring.sorting else []) for p in prompts]
        rows = [[p.query_rows, p.null_rows] + ([p.sort_rows] if scoring.sorting else []) for p in prompts]
        captured = self.engine.suffix_attention_batch([p.prefix_ids for p in prompts], suffixes, rows=rows, heads=read)
        pending = launch_prompt_signals(
            captured, head_order(read), [p.passage_spans for p in prompts],
            heads=scoring.heads,
            weights=scoring.fusion.head_weights,
            sort_heads=scoring.sort_heads if scoring.sorting else None,
            sink_factor=scoring.sink_factor,
            aggregate=scoring.aggregate,
            features=features and bool(scoring.fusion.head_weights),
            per_token=[len(p.prefix_ids) for p in prompts] if sentences else None,
        )

        def reads() -> list[PromptRead]:
            return [
                self._prompt_read(query, list(passages), prompt, signals)
                for query, passages, prompt, signals in zip(queries, texts, prompts, pending.result())
            ]

        if scoring.sort_rounds > 1:  # the further rounds are built from the first one's result
            done = reads()
            return lambda: done
        return reads

    def read(
        self,
        prompts: Sequence[TokenizedPrompt],
        queries: Sequence[str],
        texts: Sequence[Sequence[str]],
        *,
        sentences: bool = False,
        features: bool = False,
    ) -> list[PromptRead]:
        """``launch_reads``, waited for."""
        return self.launch_reads(prompts, queries, texts, sentences=sentences, features=features)()

    def launch_distraction(
        self, queries: Sequence[str], texts: Sequence[Sequence[str]], prompts: DistractionPrompts | None = None
    ) -> Pending[list[DistractionScores | None]]:
        """Every (query, passage) distraction prompt of the batch in as few packed passes as
        ``PACKED_TOKENS`` allows; ``None`` per input without distraction. ``prompts`` are the
        prompts tokenized beforehand (``ragfocus.preparation``), else they are tokenized here."""
        if not self.scoring.distraction or not queries:
            empty: list[DistractionScores | None] = [None] * len(queries)
            return lambda: empty
        if prompts is None:
            prompts = tokenize_distraction(self.loaded.tokenizer, list(zip(queries, texts)))
        return launch_distraction(self.loaded.model, prompts, batch_size=max(1, len(prompts.sequences))).result  # type: ignore[return-value]

    def _prompt_read(self, query: str, texts: list[str], prompt: TokenizedPrompt, signals: PromptSignals) -> PromptRead:
        scoring = self.scoring
        table = SignalTable(len(texts))
        table.set(RETRIEVAL_HEADS, signals.calibrated)
        table.set(QUERY_ATTENTION, signals.query_mass)
        table.set(NULL_ATTENTION, signals.null_mass)
        if scoring.sorting:
            assert signals.sort is not None
            sort_scores = signals.sort
            if scoring.sort_rounds > 1:
                sort_scores = attention_sort(
                    self.engine,
                    lambda order: build_prompt(self.loaded.tokenizer, query, [texts[i] for i in order]),
                    len(texts),
                    scoring.sort_heads,
                    rounds=scoring.sort_rounds,
                    first_round=signals.sort,
                ).scores
            table.set(ATTENTION_SORT, sort_scores)
        if scoring.fusion.head_weights:
            assert signals.learned is not None
            table.set(LEARNED_HEADS, signals.learned)  # combined on the device
        found = sentence_scores(prompt, signals.per_token) if signals.per_token is not None else None
        return PromptRead(table, signals.features, found, signals.per_token)
