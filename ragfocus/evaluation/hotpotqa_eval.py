"""``ragfocus eval hotpotqa``: passage ranking on HotpotQA dev-distractor.

recall@2 = share of the 2 gold paragraphs in a ranker's top 2; both@4 = share of questions
with both gold paragraphs in the top 4. Every row is measured in the same run on the same
questions.

The attention rows (the Focuser's default heads, all heads, the middle layers, each head
profile's top-k) come from ONE capture of every head per question: the ragfocus prompt is
run once with all heads read, and each row scores the passages from its own heads with the
Focuser's own code (``score_head_set``), so rows differ only in the heads they read. With
``timing=True`` the Focuser's own ``rank`` also runs (timed, and its scores are compared
with the derived row) beside one plain forward pass of the scorer over the same prompt.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from ragfocus.engine import HeadSet
from ragfocus.evaluation.baselines import bm25_scores, minilm_scores, random_scores
from ragfocus.evaluation.datasets import HotpotQuestion, hotpotqa
from ragfocus.focuser import Focuser
from ragfocus.head_profile import HeadProfile
from ragfocus.prompt import build_prompt
from ragfocus.scoring.heads import all_heads, middle_layer_heads
from ragfocus.scoring.retrieval_heads import capture_head_attention, score_head_set

Ranker = Callable[[HotpotQuestion], list[float]]
DEFAULT_TOP_KS = (4, 8, 16)
DEFAULT_ROW = "ragfocus default"


@dataclass
class MethodResult:
    method: str
    recall_at_2: float
    both_at_4: float
    seconds_per_query: float | None
    """Median seconds per question; ``None`` for rows read from the shared capture."""
    questions: int
    heads: int | None = None
    """Number of heads read (attention rows only)."""


@dataclass
class EvalReport:
    start: int
    limit: int
    model: str
    default_heads: str
    methods: list[MethodResult]
    capture_seconds_per_query: float
    """Median seconds of the shared all-heads capture (every layer runs)."""
    mean_prompt_tokens: float
    forward_seconds_per_query: float | None = None
    """With timing: median seconds of one plain forward pass over the same prompts."""
    ragfocus_seconds_per_query: float | None = None
    ragfocus_over_forward: float | None = None
    """With timing: median over questions of (Focuser.rank time / forward time)."""
    max_score_difference: float | None = None
    """With timing: largest |Focuser.rank score - derived default-row score| seen."""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def recall_at(ranking: Sequence[int], gold: frozenset[int], k: int) -> float:
    return len(set(ranking[:k]) & gold) / len(gold)


def ranking_of(scores: Sequence[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda index: (-scores[index], index))


def head_rows(focuser: Focuser, profiles: Sequence[HeadProfile], top_ks: Sequence[int]) -> dict[str, HeadSet]:
    """The attention rows of a report: name -> heads."""
    layers, heads = focuser.loaded.num_layers, focuser.loaded.num_heads
    rows: dict[str, HeadSet] = {
        DEFAULT_ROW: focuser.heads,
        "all heads": all_heads(layers, heads),
        "middle layers": middle_layer_heads(layers, heads),
    }
    for profile in profiles:
        profile.check_model(focuser.loaded)
        for k in top_ks:
            name = f"{_label(profile)}, top {k}"
            if name in rows:
                raise ValueError(f"two profiles give the row {name!r}; pass each profile once")
            rows[name] = profile.top(k)
    return rows


def _label(profile: HeadProfile) -> str:
    criterion = profile.parameters.get("criterion")
    return f"{profile.method} heads ({criterion})" if criterion else f"{profile.method} heads"


def evaluate_hotpotqa(
    focuser: Focuser,
    *,
    start: int,
    limit: int,
    profiles: Sequence[HeadProfile] = (),
    top_ks: Sequence[int] = DEFAULT_TOP_KS,
    progress: bool = True,
    baselines: bool = True,
    timing: bool = False,
) -> EvalReport:
    """Rank every question's 10 paragraphs with each attention row and each baseline."""
    from tqdm.auto import tqdm

    questions = hotpotqa(start, limit)
    rows = head_rows(focuser, profiles, top_ks)
    everything = all_heads(focuser.loaded.num_layers, focuser.loaded.num_heads)
    rankers: dict[str, Ranker] = {}
    if baselines:
        rankers = {
            "BM25": lambda q: bm25_scores(q.question, q.paragraphs),
            "all-MiniLM-L6-v2": lambda q: minilm_scores(q.question, q.paragraphs),
            "random": lambda q: random_scores(q.paragraphs, seed=q.index),
        }
        minilm_scores("warm up", ["the embedder loads once"])
    names = list(rows) + list(rankers)
    recalls: dict[str, list[float]] = {name: [] for name in names}
    boths: dict[str, list[float]] = {name: [] for name in names}
    seconds: dict[str, list[float]] = {name: [] for name in rankers}
    capture_seconds: list[float] = []
    tokens: list[int] = []
    timed: dict[str, list[float]] = {"ragfocus": [], "forward": [], "ratio": [], "difference": []}

    def score(name: str, question: HotpotQuestion, values: Sequence[float]) -> None:
        ranking = ranking_of(values)
        recalls[name].append(recall_at(ranking, question.gold, 2))
        boths[name].append(float(question.gold <= set(ranking[:4])))

    for question in tqdm(questions, desc="hotpotqa", disable=not progress, unit="q"):
        prompt = build_prompt(focuser.loaded.tokenizer, question.question, question.paragraphs)
        began = time.perf_counter()
        attention = capture_head_attention(focuser.engine, prompt, everything)
        capture_seconds.append(time.perf_counter() - began)
        tokens.append(prompt.total_tokens)
        derived: dict[str, list[float]] = {}
        for name, heads in rows.items():
            derived[name] = score_head_set(
                attention, heads, prompt.passage_spans, sink_factor=focuser.sink_factor, aggregate=focuser.aggregate
            ).calibrated
            score(name, question, derived[name])
        for name, ranker in rankers.items():
            began = time.perf_counter()
            values = ranker(question)
            seconds[name].append(time.perf_counter() - began)
            score(name, question, values)
        if timing:
            _time_against_forward(focuser, question, derived[DEFAULT_ROW], timed)
    methods = [
        MethodResult(name, _mean(recalls[name]), _mean(boths[name]), None, len(questions), _count(heads))
        for name, heads in rows.items()
    ] + [
        MethodResult(name, _mean(recalls[name]), _mean(boths[name]), statistics.median(seconds[name]), len(questions))
        for name in rankers
    ]
    report = EvalReport(
        start=start,
        limit=limit,
        model=focuser.loaded.name,
        default_heads=focuser.heads_source,
        methods=methods,
        capture_seconds_per_query=statistics.median(capture_seconds),
        mean_prompt_tokens=_mean([float(t) for t in tokens]),
    )
    if timing:
        report.forward_seconds_per_query = statistics.median(timed["forward"])
        report.ragfocus_seconds_per_query = statistics.median(timed["ragfocus"])
        report.ragfocus_over_forward = statistics.median(timed["ratio"])
        report.max_score_difference = max(timed["difference"])
    return report


def _time_against_forward(
    focuser: Focuser, question: HotpotQuestion, derived: Sequence[float], timed: dict[str, list[float]]
) -> None:
    began = time.perf_counter()
    ranked = focuser.rank(question.question, question.paragraphs)
    ours = time.perf_counter() - began
    _, forward = _plain_forward_seconds(focuser, question)
    by_index = sorted(ranked, key=lambda p: p.index)
    timed["ragfocus"].append(ours)
    timed["forward"].append(forward)
    timed["ratio"].append(ours / forward)
    timed["difference"].append(max(abs(p.score - value) for p, value in zip(by_index, derived)))


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


def _count(heads: HeadSet) -> int:
    return sum(len(layer_heads) for layer_heads in heads.values())


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
