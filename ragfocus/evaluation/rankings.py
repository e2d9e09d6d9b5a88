"""Record ``Focuser`` rankings of HotpotQA questions and compare two recordings.

What checks that the GPU path (bf16, batched) ranks as the CPU path (float32, one query at a
time) does: the same top 2 on at least 99% of the questions, and scores that differ by no more
than bfloat16's precision allows. A recording is plain JSON, so one made on a laptop's CPU can
be compared with one made on a GPU server.
"""

from __future__ import annotations

import logging
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from tqdm.auto import tqdm

from ragfocus.evaluation.datasets import HotpotQuestion
from ragfocus.focuser import Focuser
from ragfocus.types import ScoredPassage

logger = logging.getLogger(__name__)

RECORDING_FORMAT = "ragfocus-rankings/1"


def record_rankings(
    focuser: Focuser, questions: Sequence[HotpotQuestion], *, batch_size: int = 1, progress: bool = True
) -> dict[str, Any]:
    """Rank every question's paragraphs; ``batch_size`` > 1 goes through ``Focuser.rank_many``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    ranked: list[list[ScoredPassage]] = []
    bar = tqdm(total=len(questions), desc="ranking", unit="q", disable=not progress)
    for first in range(0, len(questions), batch_size):
        chunk = questions[first : first + batch_size]
        if batch_size == 1:
            ranked.append(focuser.rank(chunk[0].question, chunk[0].paragraphs))
        else:
            ranked.extend(focuser.rank_many([(q.question, q.paragraphs) for q in chunk], batch_size=batch_size))
        bar.update(len(chunk))
    bar.close()
    return {
        "format": RECORDING_FORMAT,
        "model": focuser.loaded.name,
        "device": str(focuser.loaded.device),
        "dtype": str(focuser.loaded.dtype).removeprefix("torch."),
        "batch_size": batch_size,
        "signals": list(focuser.signal_names),
        "machine": platform.machine(),
        "date": date.today().isoformat(),
        "questions": [
            {
                "index": question.index,
                "order": [p.index for p in result],
                "scores": [_finite(p.score) for p in sorted(result, key=lambda p: p.index)],
            }
            for question, result in zip(questions, ranked)
        ],
    }


@dataclass(frozen=True)
class RankingAgreement:
    """How far two recordings of the same questions agree."""

    questions: int
    same_top2: float
    """Share of questions whose two best passages are the same set."""
    same_top1: float
    max_score_difference: float
    """Largest absolute difference of a passage's fused score."""
    mean_score_difference: float
    score_scale: float
    """Mean absolute fused score of the reference: the differences' yardstick."""
    differing: list[int]
    """Question indices whose top 2 differ."""
    signals_not_shared: list[str] = field(default_factory=list)
    """Signals one recording fused and the other did not (say, distraction turned off in
    one): then the two differ by configuration, not by device or precision."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compare_rankings(reference: dict[str, Any], candidate: dict[str, Any]) -> RankingAgreement:
    """Compare two recordings question by question (matched by question index).

    Raises:
        ValueError: a recording is not one, or they share no question, or a shared question
            has a different number of passages.
    """
    for name, recording in (("reference", reference), ("candidate", candidate)):
        if recording.get("format") != RECORDING_FORMAT:
            raise ValueError(f"the {name} is not a {RECORDING_FORMAT} recording")
    theirs = {entry["index"]: entry for entry in candidate["questions"]}
    shared = [entry for entry in reference["questions"] if entry["index"] in theirs]
    if not shared:
        raise ValueError("the two recordings share no question")
    top2 = top1 = 0
    differing: list[int] = []
    differences: list[float] = []
    magnitudes: list[float] = []
    for mine in shared:
        other = theirs[mine["index"]]
        if len(mine["scores"]) != len(other["scores"]):
            raise ValueError(f"question {mine['index']} has {len(mine['scores'])} passages in one recording and {len(other['scores'])} in the other")
        if set(mine["order"][:2]) == set(other["order"][:2]):
            top2 += 1
        else:
            differing.append(mine["index"])
        top1 += mine["order"][0] == other["order"][0]
        for a, b in zip(mine["scores"], other["scores"]):
            if a is not None and b is not None:
                differences.append(abs(a - b))
                magnitudes.append(abs(a))
    count = len(shared)
    not_shared = sorted(set(reference.get("signals", [])) ^ set(candidate.get("signals", [])))
    if not_shared:
        logger.warning("the recordings fused different signals (%s in only one): they differ by configuration too", ", ".join(not_shared))
    return RankingAgreement(
        questions=count,
        same_top2=top2 / count,
        same_top1=top1 / count,
        max_score_difference=max(differences, default=math.nan),
        mean_score_difference=sum(differences) / len(differences) if differences else math.nan,
        score_scale=sum(magnitudes) / len(magnitudes) if magnitudes else math.nan,
        differing=differing,
        signals_not_shared=not_shared,
    )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
