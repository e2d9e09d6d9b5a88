"""Query-focused retrieval-head detection (``qr``) on labeled multi-passage questions.

QRHead (Wu et al., "Query-Focused Retrieval Heads Improve Long-Context Reasoning and
Re-ranking", EMNLP 2025; the same idea in CAFE, EMNLP 2025): run the ranking prompt over
questions whose gold passages are known and score each head alone by the N/A-calibrated
attention mass its query tokens put on the gold passages (QRScore). Heads are scored with
exactly the prompt, calibration, sink masking and aggregation the ``Focuser`` uses, so the
heads selected are the ones that rank well the way ragfocus reads them.

Two criteria over the same per-head passage scores (both kept, so either can be chosen
without rerunning the model):

- ``mass``: QRHead's QRScore, the mean over questions of the head's calibrated score summed
  over the gold passages;
- ``recall``: the head's own ranking accuracy, the mean over questions of recall@2 of the
  gold passages when the passages are ranked by that head alone (ties broken by ``mass``).

Data: HotpotQA dev questions, development split (0-2999) only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Literal

import torch

from ragfocus.detection.store import ResumableRecord
from ragfocus.engine import AttentionEngine
from ragfocus.evaluation.datasets import DEVELOPMENT, HotpotQuestion
from ragfocus.models import LoadedModel
from ragfocus.prompt import build_prompt
from ragfocus.scoring.heads import all_heads
from ragfocus.scoring.retrieval_heads import Aggregate, capture_head_attention, passage_scores

logger = logging.getLogger(__name__)

Criterion = Literal["mass", "recall"]
CRITERIA: tuple[str, ...] = ("mass", "recall")


def check_development_range(start: int, limit: int) -> None:
    """Heads are detected on the development split only (HotpotQA dev 0-2999)."""
    if start < DEVELOPMENT.start or start + limit > DEVELOPMENT.stop or limit < 1:
        raise ValueError(
            f"questions {start}-{start + limit - 1} are not all in the development split "
            f"({DEVELOPMENT.start}-{DEVELOPMENT.stop - 1}); heads are detected there only"
        )


def per_head_passage_scores(
    engine: AttentionEngine,
    loaded: LoadedModel,
    question: HotpotQuestion,
    *,
    sink_factor: float | None,
    aggregate: Aggregate,
) -> list[list[float]]:
    """``scores[head][passage]``: each head's calibrated score for each paragraph, heads in
    (layer, head) order over the whole model."""
    prompt = build_prompt(loaded.tokenizer, question.question, question.paragraphs)
    if loaded.max_positions is not None and prompt.total_tokens > loaded.max_positions:
        raise ValueError(
            f"HotpotQA question {question.index} makes a {prompt.total_tokens}-token prompt; {loaded.name} reads "
            f"at most {loaded.max_positions}"
        )
    attention = capture_head_attention(engine, prompt, all_heads(loaded.num_layers, loaded.num_heads))
    return [
        passage_scores(
            attention.query[row], attention.null[row], prompt.passage_spans, sink_factor=sink_factor, aggregate=aggregate
        ).calibrated
        for row in range(len(attention.heads))
    ]


def record_questions(
    engine: AttentionEngine,
    loaded: LoadedModel,
    questions: Sequence[HotpotQuestion],
    record: ResumableRecord,
    *,
    sink_factor: float | None,
    aggregate: Aggregate,
    progress: bool = True,
) -> None:
    """Score every head on every question not yet in ``record``, adding each as it finishes."""
    from tqdm.auto import tqdm

    todo = [question for question in questions if str(question.index) not in record]
    if len(todo) < len(questions):
        logger.info("qr detection: %d of %d questions already recorded", len(questions) - len(todo), len(questions))
    bar = tqdm(total=len(questions), initial=len(questions) - len(todo), desc="qr heads", unit="q", disable=not progress)
    with bar:
        for question in todo:
            began = time.perf_counter()
            scores = per_head_passage_scores(engine, loaded, question, sink_factor=sink_factor, aggregate=aggregate)
            seconds = round(time.perf_counter() - began, 3)
            record.add(str(question.index), {"gold": sorted(question.gold), "scores": scores, "seconds": seconds})
            bar.update(1)


def head_scores(records: Sequence[dict], num_layers: int, num_heads: int, criterion: Criterion) -> list[list[float]]:
    """``[layer][head]`` score of every head under ``criterion`` over the recorded questions."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion={criterion!r} is not one of {', '.join(CRITERIA)}")
    if not records:
        raise ValueError("no questions recorded: nothing to score heads on")
    # Questions differ in their number of passages: score each, then average.
    masses, recalls = [], []
    for record in records:
        scores = torch.tensor(record["scores"], dtype=torch.float64)  # (heads, passages)
        gold = torch.zeros(scores.shape[1], dtype=torch.bool)
        gold[record["gold"]] = True
        masses.append(scores[:, gold].sum(dim=1))
        recalls.append(_recall_at_2(scores, gold))
    mass = torch.stack(masses).mean(dim=0)  # QRScore, per head
    if criterion == "mass":
        values = mass
    else:
        # Equal recall is broken by mass: the nudge is far below one question's recall step.
        values = torch.stack(recalls).mean(dim=0) + 1e-6 * mass / mass.abs().max().clamp(min=1e-30)
    return values.reshape(num_layers, num_heads).tolist()


def _recall_at_2(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Per head (rows of ``scores``), the share of gold passages in that head's top 2.

    Ties between passages go to the earlier passage, as everywhere else in ragfocus."""
    # A stable descending sort keeps earlier passages first among equal scores.
    top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, : min(2, scores.shape[1])]
    return gold[top].sum(dim=1).double() / max(int(gold.sum()), 1)
