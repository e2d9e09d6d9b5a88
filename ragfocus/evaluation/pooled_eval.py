"""Ranking past the scorer's window: HotpotQA questions against a pool of many questions' paragraphs.

Each of ``count`` HotpotQA dev questions is ranked against the paragraphs of all ``count``
questions pooled together (20 questions: 200 paragraphs, about 30,000 tokens: several
8,192-token windows of SmolLM2-135M). A question is a hit at k when both its gold paragraphs
are among the first k. BM25 and all-MiniLM-L6-v2 over the same pool are the baselines; the
time per query and the peak memory of the process are reported.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ragfocus.evaluation.datasets import DEVELOPMENT, HotpotQuestion
from ragfocus.prompt import build_prompt
from ragfocus.scoring.lexical import bm25_scores
from ragfocus.windows import checked_prompts, plan_windows

if TYPE_CHECKING:
    from ragfocus.focuser import Focuser

logger = logging.getLogger(__name__)

DEFAULT_START = 2000
DEFAULT_COUNT = 20
DEFAULT_K = 10


@dataclass(frozen=True)
class Pool:
    paragraphs: list[str]
    gold: list[frozenset[int]]
    """Per question, the pool positions of its gold paragraphs."""


@dataclass
class PooledReport:
    questions: list[int]
    paragraphs: int
    pool_tokens: int
    windows: int
    k: int
    hits: dict[str, float]
    """Per method, the share of questions whose gold paragraphs are all in its top k."""
    per_question: dict[str, list[bool]]
    seconds_per_query: float
    peak_rss_mib: float
    peak_gpu_mib: float | None
    device: str
    extra: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def pool_of(questions: Sequence[HotpotQuestion]) -> Pool:
    """Every paragraph of ``questions`` in order, and each question's gold positions in it."""
    paragraphs: list[str] = []
    gold: list[frozenset[int]] = []
    for question in questions:
        offset = len(paragraphs)
        paragraphs.extend(question.paragraphs)
        gold.append(frozenset(offset + index for index in question.gold))
    return Pool(paragraphs, gold)


def hit(scores: Sequence[float], gold: frozenset[int], k: int) -> bool:
    """Whether every gold position is among the ``k`` best scores (ties: lower position first)."""
    top = sorted(range(len(scores)), key=lambda index: (-scores[index], index))[:k]
    return gold <= set(top)


def evaluate_pooled(
    focuser: Focuser,
    questions: Sequence[HotpotQuestion],
    *,
    k: int = DEFAULT_K,
    minilm: bool = True,
    progress: bool = True,
) -> PooledReport:
    """Rank each question against the pool with ``focuser``, BM25 and (optionally) MiniLM."""
    import torch
    from tqdm.auto import tqdm

    if any(question.index >= DEVELOPMENT.stop for question in questions):
        logger.warning("questions beyond dev 0-%d are in this run: report them, never tune on them", DEVELOPMENT.stop - 1)
    pool = pool_of(questions)
    tokenizer = focuser.loaded.tokenizer
    plan = plan_windows(tokenizer, questions[0].question, pool.paragraphs, focuser.window_tokens)
    windows = checked_prompts(plan, lambda texts: build_prompt(tokenizer, questions[0].question, texts), focuser.window_tokens)
    pool_tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in pool.paragraphs)
    cuda = focuser.loaded.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    per_question: dict[str, list[bool]] = {"ragfocus": [], "bm25": []}
    if minilm:
        per_question["minilm"] = []
    seconds = 0.0
    for question, gold in tqdm(list(zip(questions, pool.gold)), desc="pooled ranking", disable=not progress):
        started = time.perf_counter()
        ranked = focuser.rank(question.question, pool.paragraphs)
        seconds += time.perf_counter() - started
        scores = [0.0] * len(pool.paragraphs)
        for passage in ranked:
            scores[passage.index] = passage.score
        per_question["ragfocus"].append(hit(scores, gold, k))
        per_question["bm25"].append(hit(bm25_scores(question.question, pool.paragraphs), gold, k))
        if minilm:
            from ragfocus.evaluation.baselines import minilm_scores

            per_question["minilm"].append(hit(minilm_scores(question.question, pool.paragraphs), gold, k))
    return PooledReport(
        questions=[question.index for question in questions],
        paragraphs=len(pool.paragraphs),
        pool_tokens=pool_tokens,
        windows=len(windows),
        k=k,
        hits={name: sum(found) / len(found) for name, found in per_question.items()},
        per_question=per_question,
        seconds_per_query=seconds / len(questions),
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        peak_gpu_mib=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        device=str(focuser.loaded.device),
    )


def render_pooled(report: PooledReport) -> str:
    lines = [
        (
            f"{len(report.questions)} questions (dev {report.questions[0]}-{report.questions[-1]}) against "
            f"{report.paragraphs} pooled paragraphs ({report.pool_tokens} tokens, {report.windows} windows)"
        ),
        f"both gold paragraphs in the top {report.k}:",
    ]
    lines += [f"  {name:<10} {share:.3f}" for name, share in report.hits.items()]
    lines.append(f"ragfocus: {report.seconds_per_query:.2f} s per query on {report.device}; "
                 f"peak RSS {report.peak_rss_mib:.0f} MiB"
                 + (f", peak GPU {report.peak_gpu_mib:.0f} MiB" if report.peak_gpu_mib is not None else ""))
    return "\n".join(lines)


def add_pooled_parser(subparsers: argparse._SubParsersAction, run: Callable[[argparse.Namespace], int]) -> None:
    """Add ``pooled`` to the ``eval`` suites; ``run`` (the command's handler) prints the report."""
    pooled = subparsers.add_parser("pooled", help="rank HotpotQA questions against many questions' paragraphs pooled")
    pooled.add_argument("--start", type=int, default=DEFAULT_START, help=f"first question (default {DEFAULT_START}; dev 0-2999)")
    pooled.add_argument("--questions", type=int, default=DEFAULT_COUNT, help=f"questions pooled (default {DEFAULT_COUNT})")
    pooled.add_argument("--k", type=int, default=DEFAULT_K, help=f"hit when both gold paragraphs are in the top k (default {DEFAULT_K})")
    pooled.add_argument("--model", default=None, help="scorer: Hugging Face id or path (default: embedded SmolLM2-135M)")
    pooled.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    pooled.add_argument("--distraction", action=argparse.BooleanOptionalAction, default=False,
                        help="add the distraction pass (default off)")
    pooled.add_argument("--window-tokens", type=int, default=None, help="Focuser(window_tokens=...) (default: one prompt up to the model context, 2048-token windows past it)")
    pooled.add_argument("--final-round", type=int, default=None, help="Focuser(final_round=...) (default: the library's)")
    pooled.add_argument("--no-minilm", action="store_true", help="skip the MiniLM baseline")
    pooled.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    pooled.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    pooled.set_defaults(run=run)
