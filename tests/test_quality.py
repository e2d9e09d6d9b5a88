"""Ranking quality and speed on HotpotQA development questions (dev split 0-2999 only).

The reported numbers come from ``ragfocus eval hotpotqa`` on the validation split
(docs/benchmarks.md); these tests hold the same properties on a small development sample.
"""

from __future__ import annotations

import statistics

import pytest

from ragfocus import Focuser
from ragfocus.evaluation.baselines import random_scores
from ragfocus.evaluation.datasets import HotpotQuestion, hotpotqa
from ragfocus.evaluation.hotpotqa_eval import _plain_forward_seconds, ranking_of, recall_at
from ragfocus.prompt import TokenizedPrompt, build_prompt
from ragfocus.scoring.heads import all_heads, middle_layer_heads
from ragfocus.scoring.retrieval_heads import HeadAttention, capture_head_attention, score_head_set

QUESTIONS = hotpotqa(2000, 24)


@pytest.fixture(scope="module")
def every_head(default_model) -> list[tuple[HotpotQuestion, TokenizedPrompt, HeadAttention]]:
    """One capture of every head per development question (2000-2015), shared by the head
    tests: scoring a head set from it is what ``Focuser.rank`` with ``fusion="heads"`` and
    that head set computes (the same attention rows, captured once instead of once per set)."""
    focuser = Focuser(default_model, fusion="heads")
    every = all_heads(default_model.num_layers, default_model.num_heads)
    captured = []
    for question in QUESTIONS[:16]:
        prompt = build_prompt(default_model.tokenizer, question.question, question.paragraphs)
        captured.append((question, prompt, capture_head_attention(focuser.engine, prompt, every)))
    return captured


def _recall(every_head, scores_of) -> float:
    return statistics.mean(recall_at(ranking_of(scores_of(question, prompt, attention)), question.gold, 2) for question, prompt, attention in every_head)


def test_calibration_is_what_makes_many_heads_rank(default_model, every_head) -> None:
    """With the fallback head set (every head of layers 7-21), raw query attention ranks
    poorly and the N/A calibration lifts it well above chance. (With the 8 bundled heads raw
    and calibrated attention come out close: the selected heads already attend to content.)"""
    middle = middle_layer_heads(default_model.num_layers, default_model.num_heads)

    def calibrated(question, prompt, attention):
        return score_head_set(attention, middle, prompt.passage_spans).calibrated

    def raw(question, prompt, attention):
        return score_head_set(attention, middle, prompt.passage_spans).query_mass

    recall, recall_raw = _recall(every_head, calibrated), _recall(every_head, raw)
    recall_chance = _recall(every_head, lambda question, prompt, attention: random_scores(question.paragraphs, seed=question.index))
    assert recall >= 0.45, (recall, recall_raw, recall_chance)
    assert recall >= recall_raw + 0.15
    assert recall >= recall_chance + 0.2


def test_head_set_scores_from_one_capture_equal_focuser_rank(default_model, every_head) -> None:
    """The shared capture scores a head set as ``Focuser.rank`` does (checked on two questions)."""
    middle = middle_layer_heads(default_model.num_layers, default_model.num_heads)
    focuser = Focuser(default_model, fusion="heads", heads=middle)
    for question, prompt, attention in every_head[:2]:
        ranked = sorted(focuser.rank(question.question, question.paragraphs), key=lambda p: p.index)
        expected = score_head_set(attention, middle, prompt.passage_spans).calibrated
        assert [p.score for p in ranked] == pytest.approx(expected, abs=1e-5)


def test_ranking_cost_against_a_plain_forward_pass(default_model, default_focuser: Focuser) -> None:
    """The default (no distraction pass) ranks in no more than 1.5 plain forward passes of
    the same prompt (a loose bound for a shared CI machine: the median measured in one quiet
    process is in docs/benchmarks.md); with ``distraction=True`` (one more batched pass over
    every passage alone) it stays under 4."""
    import time

    full = Focuser(default_model, distraction=True)
    assert "distraction" not in default_focuser.signal_names and "distraction" in full.signal_names
    lean_ratios, full_ratios = [], []
    for question in QUESTIONS[:3]:
        forward = _plain_forward_seconds(default_focuser, question)
        for focuser, ratios in ((default_focuser, lean_ratios), (full, full_ratios)):
            began = time.perf_counter()
            focuser.rank(question.question, question.paragraphs)
            ratios.append((time.perf_counter() - began) / forward)
    assert statistics.median(lean_ratios) <= 1.5, lean_ratios
    assert statistics.median(full_ratios) <= 4.0, full_ratios


def test_fused_default_beats_bm25_and_minilm(default_focuser: Focuser) -> None:
    """On 12 development questions no stage was fitted or tuned on (2600-2611: head weights
    used 0-2499, fusion weights 1000-1499, sort heads 2000-2099, head profiles 0-299), in one
    run, the fused default ranks the gold paragraphs above BM25 and all-MiniLM-L6-v2 and keeps
    both of them under a 40% budget at least as often as BM25 (validation numbers:
    docs/benchmarks.md)."""
    from ragfocus.evaluation.hotpotqa_eval import evaluate_hotpotqa

    report = evaluate_hotpotqa(
        default_focuser, start=2600, limit=12, progress=False, peers=False, sentences=False, head_rows_on=False
    )
    recall = {method.method: method.recall_at_2 for method in report.methods}
    assert recall["ragfocus default"] >= max(recall["BM25"], recall["all-MiniLM-L6-v2"]) + 0.03, recall
    kept = {method.method: method.both_kept["0.4"] for method in report.methods}
    assert kept["ragfocus default"] >= kept["BM25"], kept


def test_bundled_heads_rank_better_than_all_heads(default_model, every_head) -> None:
    """The claim behind head profiles, on development questions the heads were not detected
    on (the bundled profile used dev 0-299): one capture of every head per question, scored
    once with the bundled heads and once with all 270 (ranking by the heads alone)."""
    bundled = Focuser(default_model, fusion="heads").heads
    every = all_heads(default_model.num_layers, default_model.num_heads)
    recall = {
        name: _recall(every_head, lambda question, prompt, attention, heads=heads: score_head_set(attention, heads, prompt.passage_spans).calibrated)
        for name, heads in (("bundled", bundled), ("all heads", every))
    }
    assert recall["bundled"] >= recall["all heads"] + 0.05, recall
