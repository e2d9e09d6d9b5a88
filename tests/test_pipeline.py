"""One pipeline: ``rank`` is ``rank_many`` of one request, a single request runs the stages in
order on the calling thread, sentences and windows go through the same device stage, and the
budget is filled from per-passage counts."""

from __future__ import annotations

import pytest

from ragfocus import Focuser
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.pipeline import batches
from ragfocus.selection import SelectionConfig, select
from ragfocus.types import Passage, ScoredPassage

QUESTIONS = hotpotqa(2602, 3)


def test_rank_equals_rank_many_of_one_request_exactly(default_focuser: Focuser) -> None:
    for question in QUESTIONS[:2]:
        alone = default_focuser.rank(question.question, question.paragraphs)
        (many,) = default_focuser.rank_many([(question.question, question.paragraphs)])
        assert [(p.index, p.score, dict(p.signals)) for p in alone] == [(p.index, p.score, dict(p.signals)) for p in many]


def test_one_request_starts_no_thread_and_many_batches_do(default_focuser: Focuser, monkeypatch: pytest.MonkeyPatch) -> None:
    started = []

    class Recording(batches.ThreadPoolExecutor):  # type: ignore[misc]
        def __init__(self, *args, **kwargs) -> None:
            started.append(kwargs.get("thread_name_prefix"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(batches, "ThreadPoolExecutor", Recording)
    question = QUESTIONS[0]
    default_focuser.rank(question.question, question.paragraphs[:4])
    default_focuser.focus(question.question, question.paragraphs[:4], budget=100)
    assert started == []
    default_focuser.rank_many([(q.question, q.paragraphs[:4]) for q in QUESTIONS], batch_size=2)
    assert started == ["ragfocus-device"]


def test_sentence_scores_come_from_the_batched_capture(default_focuser: Focuser) -> None:
    """``granularity="sentence"`` requests are scored together in one batch, as one at a time."""
    requests = [(q.question, q.paragraphs[:5]) for q in QUESTIONS]
    together = default_focuser.focus_many(requests, budget=120, granularity="sentence", batch_size=3)
    for (query, passages), result in zip(requests, together):
        alone = default_focuser.focus(query, passages, budget=120, granularity="sentence")
        assert result.tokens_out <= 120 and alone.tokens_out <= 120
        assert [p.index for p in result.kept] == [p.index for p in alone.kept]
        assert [p.text for p in result.kept] == [p.text for p in alone.kept]


def test_windows_read_through_the_device_stage(default_model, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request past one prompt is scored in windows, all of them in one batched read, then
    a final round: two reads of the device stage, no other capture."""
    focuser = Focuser(default_model, window_tokens=512, final_round=4)
    reads = []
    original = focuser.pipeline.stage.launch_reads

    def counted(prompts, *args, **kwargs):
        reads.append(len(prompts))
        return original(prompts, *args, **kwargs)

    monkeypatch.setattr(focuser.pipeline.stage, "launch_reads", counted)
    question = QUESTIONS[1]
    ranked = focuser.rank(question.question, question.paragraphs)
    assert sorted(p.index for p in ranked) == list(range(len(question.paragraphs)))
    assert len(reads) == 2 and reads[0] > 1 and reads[1] == 1, reads
    assert all("window_score" in p.signals for p in ranked)


def _scored(texts: list[str]) -> list[ScoredPassage]:
    return [
        ScoredPassage(index=i, rank=i, text=text, score=float(-i), signals={}, passage=Passage(text))
        for i, text in enumerate(texts)
    ]


def test_the_budget_is_filled_from_one_count_per_passage() -> None:
    calls: list[str] = []

    def count(text: str) -> int:
        calls.append(text)
        return len(text.split())

    texts = [f"passage {i} " + "word " * (3 + i) for i in range(10)]
    chosen = select(_scored(texts), SelectionConfig(budget=40), count)
    assert chosen.tokens_out <= 40 and chosen.kept
    # the input once, the separator once, each passage once, the context once; a joined
    # text only for a passage within BOUNDARY_SLACK of fitting (this counter is additive)
    joined = [text for text in calls[2:] if "\n\n" in text]
    assert len(calls) == 1 + 1 + len(texts) + len(joined) and len(joined) <= 3, calls


def test_a_join_that_merges_tokens_is_checked_on_the_joined_text() -> None:
    """Under a counter where joining saves a token, the summed counts miss the budget by one
    and the joined text fits: the passage is kept."""
    texts = ["a b c", "d e f"]  # 3 + 1 + 3 = 7 summed, 6 joined
    chosen = select(_scored(texts), SelectionConfig(budget=6), lambda text: -(-len(text) // 2))
    assert [p.index for p in chosen.kept] == [0, 1] and chosen.tokens_out == 6


def test_a_join_that_adds_tokens_never_exceeds_the_budget() -> None:
    """Under a counter where joining adds a token, the summed counts fit and the joined text
    does not: the last passage added is dropped."""
    texts = ["a b c", "d e f"]  # 2 + 1 + 2 = 5 summed, 6 joined
    chosen = select(_scored(texts), SelectionConfig(budget=5), lambda text: len(text) // 2)
    assert [p.index for p in chosen.kept] == [0] and chosen.tokens_out == 2
