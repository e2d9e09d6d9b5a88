"""The finish stage for one request: its distinct texts' signals fused into scores.

A request whose prompt fits the model's context arrives with its device reads done (the
batch's). A longer one is scored here in windows (``ragfocus.windows``), every window of it in
one batch through the same device stage, the windows' signals put on one scale by their
prompt length, and the best passages scored again together in a final round.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from ragfocus.fusion import fuse
from ragfocus.pipeline.device import DeviceStage, PromptRead
from ragfocus.prompt import TokenizedPrompt, build_prompt
from ragfocus.scoring.distraction import DistractionScores
from ragfocus.scoring.lexical import bm25_scores
from ragfocus.scoring.retrieval_heads import combine_head_features
from ragfocus.sentence_scores import ScoredSentence
from ragfocus.signals import ABSTAIN_LOGPROB, BM25, DISTRACTION, LEARNED_HEADS, RETRIEVER, WINDOW_SCORE, SignalTable
from ragfocus.types import PassagePart
from ragfocus.windows import WindowPlan, checked_prompts, plan_windows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceResult:
    """What the batch computed for one request that fits one prompt."""

    prompt: TokenizedPrompt
    read: PromptRead
    distraction: DistractionScores | None
    lexical: list[float]
    """BM25 of the texts, computed with the tokenizing."""


@dataclass(frozen=True)
class ScoredTexts:
    """Per distinct text: its signals, fused score, parts (windowed texts) and sentences."""

    signals: list[dict[str, float]]
    scores: list[float]
    parts: list[tuple[PassagePart, ...]]
    sentences: list[list[ScoredSentence]]


def score_texts(
    stage: DeviceStage,
    query: str,
    texts: list[str],
    retriever: list[float | None],
    *,
    sentences: bool,
    done: DeviceResult | None = None,
) -> ScoredTexts:
    """Fuse the signals of distinct non-empty texts: from ``done`` when the batch read them in
    one prompt, else in windows (over-long texts in parts) read here and put on one scale."""
    started = time.perf_counter()
    scoring, tokenizer = stage.scoring, stage.loaded.tokenizer
    whole = done.prompt if done is not None else build_prompt(tokenizer, query, texts)
    fits = scoring.prompt_tokens is None or whole.total_tokens <= scoring.prompt_tokens
    limit = None if fits else scoring.window_tokens
    plan = plan_windows(tokenizer, query, texts, limit)
    if fits:
        windows = [(plan.windows[0], whole)]
    else:
        windows = checked_prompts(plan, lambda window: build_prompt(tokenizer, query, window), limit)
    rescale = len(windows) > 1
    if done is not None and fits:
        reads = [done.read]
    else:
        window_texts = [[plan.units[unit].text for unit in window] for window, _ in windows]
        reads = stage.read([prompt for _, prompt in windows], [query] * len(windows), window_texts,
                           sentences=sentences, features=rescale)
    table = SignalTable(len(plan.units))
    features: list[tuple[torch.Tensor, list[int]]] = []
    unit_sentences: dict[int, list[ScoredSentence]] = {}
    slots: list[tuple[int, int]] = [(0, 1)] * len(plan.units)
    for (window, prompt), read in zip(windows, reads):
        scale = float(len(prompt.prefix_ids)) if rescale else 1.0
        for name, values in read.signals.scaled(scale).columns.items():
            table.put(name, window, values)
        for position, unit in enumerate(window):
            slots[unit] = (position, len(window))
            if read.sentences is not None:
                unit_sentences[unit] = [ScoredSentence(s.start, s.end, s.text, s.score * scale) for s in read.sentences[position]]
        if rescale and read.head_features is not None:
            features.append((read.head_features * scale, window))
    weights = scoring.fusion.head_weights
    if features:
        merged = torch.zeros(len(weights), len(plan.units), dtype=torch.float64)
        for matrix, window in features:
            merged[:, window] = matrix.double()
        table.set(LEARNED_HEADS, combine_head_features(merged, weights))
    unit_texts = [unit.text for unit in plan.units]
    if scoring.distraction:
        found = done.distraction if done is not None and fits and done.distraction is not None else None
        if found is None:
            (found,) = stage.launch_distraction([query], [unit_texts])()
        assert found is not None
        table.set(DISTRACTION, found.distraction)
        table.set(ABSTAIN_LOGPROB, found.abstain_logprob)
    table.set(BM25, done.lexical if done is not None and fits else bm25_scores(query, unit_texts))
    scores = [retriever[part.item] for part in plan.units]
    if all(score is not None for score in scores):  # only some passages scored: the fusion leaves it out
        table.set(RETRIEVER, scores)  # type: ignore[arg-type]
    fused = fuse(table, scoring.fusion, positional=scoring.positional, slots=slots if rescale else None)
    if rescale:
        table.set(WINDOW_SCORE, fused)
        if scoring.final_round:
            _final_round(stage, query, plan, table, fused)
    logger.debug("scored %d passages (%d units, %d windows) in %.3f s", len(texts), len(plan.units), len(windows),
                 time.perf_counter() - started)
    return _gather(plan, table, fused, unit_sentences, len(texts), sentences=sentences)


def _final_round(stage: DeviceStage, query: str, plan: WindowPlan, table: SignalTable, fused: list[float]) -> None:
    """Score the best units of the windowed ranking again, together in one prompt, and lift
    them above every other unit (``table`` and ``fused`` are updated in place).

    The windows' attention signals are on one scale only approximately (each is rescaled by
    its own length); in the final prompt the finalists compete for the same attention, as the
    ten passages of a HotpotQA question do in the setting the fusion was tuned on. The
    lexical, distraction and retriever signals are the windowed run's (BM25 over every
    passage is the better estimate); ``window_score`` keeps the first-stage score.
    """
    scoring, tokenizer = stage.scoring, stage.loaded.tokenizer
    best_unit: dict[int, int] = {}
    for unit, part in enumerate(plan.units):
        if part.item not in best_unit or fused[unit] > fused[best_unit[part.item]]:
            best_unit[part.item] = unit
    ranked = sorted(best_unit.values(), key=lambda unit: (-fused[unit], unit))[: scoring.final_round]
    room = scoring.window_tokens
    while len(ranked) > 1:
        prompt = build_prompt(tokenizer, query, [plan.units[unit].text for unit in ranked])
        if room is None or prompt.total_tokens <= room:
            break
        ranked = ranked[:-1]
    if len(ranked) < 2:
        return
    finalists = sorted(ranked)  # input order, as every prompt
    finalist_texts = [plan.units[unit].text for unit in finalists]
    prompt = build_prompt(tokenizer, query, finalist_texts)
    (read,) = stage.read([prompt], [query], [finalist_texts])
    final_table = table.take(finalists)
    for name, values in read.signals.columns.items():
        final_table.set(name, values)
    final = fuse(final_table, scoring.fusion, positional=scoring.positional)
    chosen = set(finalists)
    others = [fused[unit] for unit in range(len(fused)) if unit not in chosen]
    lift = max(others) - min(final) + 1.0 if others else 0.0
    for name, values in final_table.columns.items():
        table.put(name, finalists, values)
    for unit, value in zip(finalists, final):
        fused[unit] = value + lift


def _gather(
    plan: WindowPlan,
    table: SignalTable,
    fused: list[float],
    unit_sentences: dict[int, list[ScoredSentence]],
    count: int,
    *,
    sentences: bool,
) -> ScoredTexts:
    """Per text: its best unit's signals and score, its parts (when it has several) and its
    sentences (offsets of every part moved to the whole text)."""
    by_text: list[list[int]] = [[] for _ in range(count)]
    for unit, part in enumerate(plan.units):
        by_text[part.item].append(unit)
    signals, scores, parts, found = [], [], [], []
    for units in by_text:
        best = max(units, key=lambda unit: (fused[unit], -unit))
        signals.append(table.row(best))
        scores.append(fused[best])
        parts.append(
            tuple(PassagePart(plan.units[u].start, plan.units[u].end, fused[u], table.row(u)) for u in units)
            if len(units) > 1 else ()
        )
        if sentences:
            found.append([
                ScoredSentence(s.start + plan.units[u].start, s.end + plan.units[u].start, s.text, s.score)
                for u in units for s in unit_sentences.get(u, [])
            ])
    return ScoredTexts(signals, scores, parts, found)
