"""``ragfocus eval hotpotqa``: passage ranking on HotpotQA dev-distractor.

recall@2 = share of the 2 gold paragraphs in a ranker's top 2; both@4 = share of questions
with both gold paragraphs in the top 4. Every row is measured in the same run on the same
questions, and the time of one plain forward pass of the scorer over the same prompt (SDPA,
no attention output, logits for the last position only) is measured beside ragfocus' own.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from ragfocus.evaluation.baselines import bm25_scores, minilm_scores, random_scores
from ragfocus.evaluation.datasets import HotpotQuestion, hotpotqa
from ragfocus.focuser import Focuser
from ragfocus.prompt import build_prompt

Ranker = Callable[[HotpotQuestion], list[float]]


@dataclass
class MethodResult:
    method: str
    recall_at_2: float
    both_at_4: float
    seconds_per_query: float
    """Median seconds per question."""
    questions: int


@dataclass
class EvalReport:
    start: int
    limit: int
    model: str
    methods: list[MethodResult]
    forward_seconds_per_query: float
    """Median seconds of one plain forward pass over the same prompts."""
    ragfocus_over_forward: float
    """Median over questions of (ragfocus time / forward time) for the same prompt."""
    mean_prompt_tokens: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def recall_at(ranking: Sequence[int], gold: frozenset[int], k: int) -> float:
    return len(set(ranking[:k]) & gold) / len(gold)


def ranking_of(scores: Sequence[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda index: (-scores[index], index))


def evaluate_hotpotqa(
    focuser: Focuser,
    *,
    start: int,
    limit: int,
    progress: bool = True,
    baselines: bool = True,
) -> EvalReport:
    """Rank every question's 10 paragraphs with each method and time the forward pass."""
    from tqdm.auto import tqdm

    questions = hotpotqa(start, limit)
    rankers: dict[str, Ranker] = {"ragfocus": lambda q: [p.score for p in sorted(focuser.rank(q.question, q.paragraphs), key=lambda p: p.index)]}
    if baselines:
        rankers.update(
            {
                "BM25": lambda q: bm25_scores(q.question, q.paragraphs),
                "all-MiniLM-L6-v2": lambda q: minilm_scores(q.question, q.paragraphs),
                "random": lambda q: random_scores(q.paragraphs, seed=q.index),
            }
        )
        minilm_scores("warm up", ["the embedder loads once"])
    recalls: dict[str, list[float]] = {name: [] for name in rankers}
    boths: dict[str, list[float]] = {name: [] for name in rankers}
    seconds: dict[str, list[float]] = {name: [] for name in rankers}
    forward_seconds: list[float] = []
    ratios: list[float] = []
    tokens: list[int] = []
    for question in tqdm(questions, desc="hotpotqa", disable=not progress, unit="q"):
        for name, ranker in rankers.items():
            began = time.perf_counter()
            scores = ranker(question)
            seconds[name].append(time.perf_counter() - began)
            ranking = ranking_of(scores)
            recalls[name].append(recall_at(ranking, question.gold, 2))
            boths[name].append(float(question.gold <= set(ranking[:4])))
        prompt_ids, forward = _plain_forward_seconds(focuser, question)
        tokens.append(prompt_ids)
        forward_seconds.append(forward)
        ratios.append(seconds["ragfocus"][-1] / forward)
    methods = [
        MethodResult(name, _mean(recalls[name]), _mean(boths[name]), statistics.median(seconds[name]), len(questions))
        for name in rankers
    ]
    return EvalReport(
        start=start,
        limit=limit,
        model=focuser.loaded.name,
        methods=methods,
        forward_seconds_per_query=statistics.median(forward_seconds),
        ragfocus_over_forward=statistics.median(ratios),
        mean_prompt_tokens=_mean([float(t) for t in tokens]),
    )


@torch.inference_mode()
def _plain_forward_seconds(focuser: Focuser, question: HotpotQuestion) -> tuple[int, float]:
    """One forward pass over the whole ranking prompt (prefix + query suffix), SDPA, no
    attention output, logits for the last position only: what a generator's prefill costs."""
    prompt = build_prompt(focuser.loaded.tokenizer, question.question, question.paragraphs)
    ids = torch.tensor([prompt.prefix_ids + prompt.query_ids], device=focuser.loaded.device)
    began = time.perf_counter()
    focuser.loaded.model(input_ids=ids, logits_to_keep=1)
    if ids.device.type == "cuda":
        torch.cuda.synchronize()
    return ids.shape[1], time.perf_counter() - began


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
