"""``ragfocus eval hotpotqa``: passage ranking and budgets on HotpotQA dev-distractor.

recall@2 = share of the 2 gold paragraphs in a method's top 2; both@4 = share of questions
with both gold paragraphs in the top 4; both@r = share of questions whose context, filled
best first under a budget of ``r`` x the input's tokens (the library's own ``select``), keeps
both gold paragraphs; answer@r = share of questions (yes/no answers left out) whose context
contains the answer string. Every row is measured in the same run on the same questions.

Per question one record holds every method's scores (JSONL with ``dump=``; reports can be
rebuilt from records, so runs over parts of a range can be merged):

- ``ragfocus default``: the fused relevance of the model's fusion profile without
  distraction, as ``Focuser()`` ranks; ``ragfocus, distraction=True``: ``Focuser.rank`` with
  the distraction pass (the eval computes it for its own row); and each signal alone:
  retrieval heads, attention sort, distraction (ranked by the abstain log-probability,
  highest DE first), BM25 over the given passages;
- ``ragfocus + retriever``: the same fusion with all-MiniLM-L6-v2's cosine passed as the
  retriever's score (what a caller with a dense retriever gets);
- head rows (``head_rows=True``): ONE capture of every head per question, each row scoring
  the passages from its own heads with the Focuser's own code (all heads, the middle layers,
  each head profile's top-k);
- peers: all-MiniLM-L6-v2 cosine, LongLLMLingua's question-conditioned perplexity ranking
  with the same model (``llmlingua`` package), random.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ragfocus.engine import HeadSet
from ragfocus.evaluation.baselines import minilm_scores, random_scores
from ragfocus.evaluation.datasets import HotpotQuestion, hotpotqa
from ragfocus.focuser import Focuser
from ragfocus.fusion import DISTRACTION_SIGNALS, fuse
from ragfocus.head_profile import HeadProfile
from ragfocus.prompt import build_prompt
from ragfocus.scoring.heads import all_heads, middle_layer_heads
from ragfocus.scoring.retrieval_heads import capture_head_attention, score_head_set
from ragfocus.selection import SelectionConfig, select
from ragfocus.tokens import token_counter
from ragfocus.types import Passage, ScoredPassage

DEFAULT_TOP_KS = (4, 8, 16)
DEFAULT_ROW = "ragfocus default"
DISTRACTION_ROW = "ragfocus, distraction=True"
RETRIEVER_ROW = "ragfocus + retriever (MiniLM score)"
SENTENCE_ROW = "ragfocus default, sentences"
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
REPORT_RATIO = 0.4
SIGNAL_ROWS = {
    "learned heads": ("learned_heads", 1.0),
    "retrieval heads": ("retrieval_heads", 1.0),
    "attention sort": ("attention_sort", 1.0),
    "distraction": ("abstain_logprob", -1.0),
    "BM25": ("bm25", 1.0),
}
"""Row name -> (signal, direction): each signal of the Focuser ranked alone."""


@dataclass
class QuestionRecord:
    """Everything measured on one question; one JSONL line of a dump."""

    index: int
    gold: list[int]
    answer: str
    paragraph_tokens: list[int]
    prompt_tokens: int
    scores: dict[str, list[float]]
    """Method -> one score per paragraph (higher = more relevant)."""
    signals: list[dict[str, float]]
    """The Focuser's signals of each paragraph."""
    sentence_context: str | None
    """The default's context at ``REPORT_RATIO`` with ``granularity="sentence"``."""
    seconds: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)
    """model, default_heads, fusion: what produced the record (for reports rebuilt from dumps)."""


@dataclass
class MethodResult:
    method: str
    recall_at_2: float
    both_at_4: float
    seconds_per_query: float | None
    """Median seconds per question; ``None`` for rows read from a shared pass."""
    questions: int
    heads: int | None = None
    both_kept: dict[str, float] = field(default_factory=dict)
    """Budget ratio (as a string) -> share of questions keeping both gold paragraphs."""
    answer_kept: float | None = None
    """At ``REPORT_RATIO``: share of non-yes/no questions whose context holds the answer."""


@dataclass
class EvalReport:
    start: int
    limit: int
    model: str
    default_heads: str
    fusion: str
    methods: list[MethodResult]
    mean_prompt_tokens: float
    answer_questions: int
    """Questions whose answer is not yes/no (the denominator of answer@r)."""
    capture_seconds_per_query: float | None = None
    forward_seconds_per_query: float | None = None
    ragfocus_seconds_per_query: float | None = None
    ragfocus_over_forward: float | None = None
    """With timing: median over questions of (Focuser.rank time / one plain forward)."""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def recall_at(ranking: Sequence[int], gold: frozenset[int] | set[int], k: int) -> float:
    return len(set(ranking[:k]) & set(gold)) / len(gold)


def ranking_of(scores: Sequence[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda index: (-_finite(scores[index]), index))


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def head_rows(focuser: Focuser, profiles: Sequence[HeadProfile], top_ks: Sequence[int]) -> dict[str, HeadSet]:
    """The head rows of a report: name -> heads."""
    layers, heads = focuser.loaded.num_layers, focuser.loaded.num_heads
    rows: dict[str, HeadSet] = {
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
    peers: bool = True,
    head_rows_on: bool = True,
    sentences: bool = True,
    timing: bool = False,
    dump: Path | None = None,
    report: bool = True,
) -> EvalReport | None:
    """Measure every method on questions ``start`` .. ``start + limit - 1``; with
    ``report=False`` only the ``dump`` is written (build the report later with
    ``report_from_records``) and ``None`` is returned."""
    if not report and dump is None:
        raise ValueError("report=False needs dump=: the records would be lost")
    from tqdm.auto import tqdm

    questions = hotpotqa(start, limit)
    rows = head_rows(focuser, profiles, top_ks) if head_rows_on else {}
    rankers = _rankers(focuser, baselines=baselines, peers=peers)
    records: list[QuestionRecord] = []
    timed: dict[str, list[float]] = {"ragfocus": [], "forward": [], "ratio": []}
    handle = dump.open("w", encoding="utf-8") if dump else None
    try:
        for question in tqdm(questions, desc="hotpotqa", disable=not progress, unit="q"):
            record = record_question(focuser, question, rows, rankers, sentences=sentences)
            records.append(record)
            if handle:
                handle.write(json.dumps(asdict(record)) + "\n")
                handle.flush()
            if timing:
                _time_against_forward(focuser, question, record.seconds[_ranked_row(focuser)], timed)
    finally:
        if handle:
            handle.close()
    if not report:
        return None
    result = report_from_records(records, focuser=focuser, start=start, limit=limit, head_counts=_head_counts(rows))
    if timing:
        result.forward_seconds_per_query = statistics.median(timed["forward"])
        result.ragfocus_seconds_per_query = statistics.median(timed["ragfocus"])
        result.ragfocus_over_forward = statistics.median(timed["ratio"])
    return result


def _rankers(focuser: Focuser, *, baselines: bool, peers: bool) -> dict[str, Callable[[HotpotQuestion], list[float]]]:
    rankers: dict[str, Callable[[HotpotQuestion], list[float]]] = {}
    if baselines:
        minilm_scores("warm up", ["the embedder loads once"])
        rankers["all-MiniLM-L6-v2"] = lambda q: minilm_scores(q.question, q.paragraphs)
        rankers["random"] = lambda q: random_scores(q.paragraphs, seed=q.index)
    if peers:
        from ragfocus.evaluation.peers import longllmlingua_scores

        rankers["LongLLMLingua (same model)"] = lambda q: longllmlingua_scores(focuser.loaded, q.question, q.paragraphs)
    return rankers


def _ranked_row(focuser: Focuser) -> str:
    """The row ``Focuser.rank``'s own scores go to: the eval's Focuser computes distraction so
    that its signal gets a row, and the default row is then fused without it."""
    return DISTRACTION_ROW if focuser.distraction else DEFAULT_ROW


def record_question(
    focuser: Focuser,
    question: HotpotQuestion,
    rows: dict[str, HeadSet],
    rankers: dict[str, Callable[[HotpotQuestion], list[float]]],
    *,
    sentences: bool,
) -> QuestionRecord:
    """Run every method on one question."""
    prompt = build_prompt(focuser.loaded.tokenizer, question.question, question.paragraphs)
    count = token_counter(focuser.loaded.tokenizer)
    scores: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    ranked = focuser.rank(question.question, question.paragraphs)
    seconds[_ranked_row(focuser)] = time.perf_counter() - began
    by_index = sorted(ranked, key=lambda passage: passage.index)
    signals = [dict(passage.signals) for passage in by_index]
    scores[_ranked_row(focuser)] = [passage.score for passage in by_index]
    if focuser.distraction:  # the default leaves distraction out: the same signals fused without it
        lean = [{name: value for name, value in row.items() if name not in DISTRACTION_SIGNALS} for row in signals]
        scores[DEFAULT_ROW] = fuse(lean, focuser.fusion, positional=focuser.positional)
    scores.update(signal_rows(signals))
    if rows:
        began = time.perf_counter()
        attention = capture_head_attention(focuser.engine, prompt, all_heads(focuser.loaded.num_layers, focuser.loaded.num_heads))
        seconds["head capture"] = time.perf_counter() - began
        for name, heads in rows.items():
            scores[name] = score_head_set(
                attention, heads, prompt.passage_spans, sink_factor=focuser.sink_factor, aggregate=focuser.aggregate
            ).calibrated
    for name, ranker in rankers.items():
        began = time.perf_counter()
        scores[name] = ranker(question)
        seconds[name] = time.perf_counter() - began
    if "all-MiniLM-L6-v2" in scores:
        with_retriever = [{**row, "retriever": value} for row, value in zip(signals, scores["all-MiniLM-L6-v2"])]
        scores[RETRIEVER_ROW] = fuse(with_retriever, focuser.fusion, positional=focuser.positional)
    sentence_context = None
    if sentences:
        sentence_context = focuser.focus(
            question.question, question.paragraphs, ratio=REPORT_RATIO, granularity="sentence"
        ).context
    return QuestionRecord(
        index=question.index,
        gold=sorted(question.gold),
        answer=question.answer,
        paragraph_tokens=[count(text) for text in question.paragraphs],
        prompt_tokens=prompt.total_tokens,
        scores=scores,
        signals=signals,
        sentence_context=sentence_context,
        seconds=seconds,
        labels={"model": focuser.loaded.name, "default_heads": focuser.heads_source, "fusion": _fusion_label(focuser)},
    )


def signal_rows(signals: Sequence[dict[str, float]]) -> dict[str, list[float]]:
    """Each of the Focuser's signals ranked alone (``SIGNAL_ROWS``), where every passage has it."""
    return {
        name: [direction * row[signal] for row in signals]
        for name, (signal, direction) in SIGNAL_ROWS.items()
        if all(signal in row for row in signals)
    }


def report_from_records(
    records: Sequence[QuestionRecord],
    *,
    focuser: Focuser | None = None,
    tokenizer: Any = None,
    start: int | None = None,
    limit: int | None = None,
    head_counts: dict[str, int] | None = None,
    model: str = "",
    default_heads: str = "",
    fusion: str = "",
) -> EvalReport:
    """Recall, both@4, budget curves and answer survival of every method in ``records``."""
    if not records:
        raise ValueError("no question records to report on")
    from ragfocus.evaluation.datasets import hotpotqa as load

    tokenizer = tokenizer if tokenizer is not None else (focuser.loaded.tokenizer if focuser else None)
    if tokenizer is None:
        raise ValueError("a tokenizer (or focuser) is needed to count budgets")
    count = lru_cache(maxsize=4096)(token_counter(tokenizer))
    questions = {q.index: q for q in _questions_for(records, load)}
    records = [replace(r, scores={**r.scores, **{k: v for k, v in signal_rows(r.signals).items() if k not in r.scores}}) for r in records]
    methods = list(dict.fromkeys(name for record in records for name in record.scores))
    results = []
    with_answer = [record for record in records if record.answer.strip().lower() not in ("yes", "no")]
    answerable = {record.index for record in with_answer}
    for name in methods:
        having = [record for record in records if name in record.scores]
        recall = [recall_at(ranking_of(r.scores[name]), set(r.gold), 2) for r in having]
        both = [float(set(r.gold) <= set(ranking_of(r.scores[name])[:4])) for r in having]
        kept_both: dict[str, list[float]] = {f"{ratio:.1f}": [] for ratio in RATIOS}
        answers: list[float] = []
        for record in having:
            question = questions[record.index]
            for ratio in RATIOS:
                context, kept = _budget_context(question, record.scores[name], ratio, count)
                kept_both[f"{ratio:.1f}"].append(float(set(record.gold) <= kept))
                if ratio == REPORT_RATIO and record.index in answerable:
                    answers.append(float(record.answer.lower() in context.lower()))
        seconds = [r.seconds[name] for r in having if name in r.seconds]
        results.append(
            MethodResult(
                method=name,
                recall_at_2=_mean(recall),
                both_at_4=_mean(both),
                seconds_per_query=statistics.median(seconds) if seconds else None,
                questions=len(having),
                heads=(head_counts or {}).get(name),
                both_kept={ratio: _mean(values) for ratio, values in kept_both.items()},
                answer_kept=_mean(answers) if answers else None,
            )
        )
    sentence = [r for r in with_answer if r.sentence_context is not None]
    if sentence:
        results.append(
            MethodResult(
                method=SENTENCE_ROW, recall_at_2=math.nan, both_at_4=math.nan, seconds_per_query=None,
                questions=len(sentence),
                answer_kept=_mean([float(r.answer.lower() in (r.sentence_context or "").lower()) for r in sentence]),
            )
        )
    captures = [r.seconds["head capture"] for r in records if "head capture" in r.seconds]
    indices = [r.index for r in records]
    labels = records[0].labels
    return EvalReport(
        start=start if start is not None else min(indices),
        limit=limit if limit is not None else len(records),
        model=focuser.loaded.name if focuser else (model or labels.get("model", "")),
        default_heads=focuser.heads_source if focuser else (default_heads or labels.get("default_heads", "")),
        fusion=_fusion_label(focuser) if focuser else (fusion or labels.get("fusion", "")),
        methods=results,
        mean_prompt_tokens=_mean([float(r.prompt_tokens) for r in records]),
        answer_questions=len(with_answer),
        capture_seconds_per_query=statistics.median(captures) if captures else None,
    )


def _fusion_label(focuser: Focuser) -> str:
    weights = ", ".join(f"{name} {weight:g}" for name, weight in focuser.fusion.weights.items() if weight)
    return f"{focuser.fusion.notes or 'fusion'} ({weights}; sort rounds {focuser.sort_rounds})"


def _questions_for(records: Sequence[QuestionRecord], load: Callable[..., list[HotpotQuestion]]) -> Iterable[HotpotQuestion]:
    indices = sorted(record.index for record in records)
    return load(indices[0], indices[-1] - indices[0] + 1, allow_held_out=False)


def _budget_context(
    question: HotpotQuestion, scores: Sequence[float], ratio: float, count: Callable[[str], int]
) -> tuple[str, set[int]]:
    order = ranking_of(scores)
    ranked = [
        ScoredPassage(index=i, rank=rank, text=question.paragraphs[i], score=_finite(scores[i]), signals={},
                      passage=Passage(question.paragraphs[i]))
        for rank, i in enumerate(order)
    ]
    chosen = select(ranked, SelectionConfig(ratio=ratio), count)
    return chosen.context, {passage.index for passage in chosen.kept}


def load_records(paths: Sequence[Path]) -> list[QuestionRecord]:
    """Question records from JSONL dumps; a question seen twice is an error."""
    records: dict[int, QuestionRecord] = {}
    for path in paths:
        with Path(path).open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = QuestionRecord(**json.loads(line))
                except (json.JSONDecodeError, TypeError) as error:
                    raise ValueError(f"{path}:{number} is not a question record: {error}") from error
                if record.index in records:
                    raise ValueError(f"question {record.index} appears twice (again in {path}:{number})")
                records[record.index] = record
    return [records[index] for index in sorted(records)]


def _head_counts(rows: dict[str, HeadSet]) -> dict[str, int]:
    return {name: sum(len(heads) for heads in head_set.values()) for name, head_set in rows.items()}


def _time_against_forward(focuser: Focuser, question: HotpotQuestion, ours: float, timed: dict[str, list[float]]) -> None:
    forward = _plain_forward_seconds(focuser, question)
    timed["ragfocus"].append(ours)
    timed["forward"].append(forward)
    timed["ratio"].append(ours / forward)


@torch.inference_mode()
def _plain_forward_seconds(focuser: Focuser, question: HotpotQuestion) -> float:
    """One forward pass over the whole ranking prompt (prefix + query suffix), SDPA, no
    attention output, logits for the last position only: what a generator's prefill costs."""
    prompt = build_prompt(focuser.loaded.tokenizer, question.question, question.paragraphs)
    ids = torch.tensor([prompt.prefix_ids + prompt.query_ids], device=focuser.loaded.device)
    began = time.perf_counter()
    focuser.loaded.model(input_ids=ids, logits_to_keep=1)
    if ids.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - began


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
