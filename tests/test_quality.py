"""Ranking quality and speed on HotpotQA development questions (dev split 0-2999 only).

The reported numbers come from ``ragfocus eval hotpotqa`` on the validation split
(docs/benchmarks.md); these tests hold the same properties on a small development sample.
"""

from __future__ import annotations

import statistics

from ragfocus import Focuser
from ragfocus.evaluation.baselines import random_scores
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.evaluation.hotpotqa_eval import _plain_forward_seconds, ranking_of, recall_at
from ragfocus.scoring.heads import middle_layer_heads

QUESTIONS = hotpotqa(2000, 24)


def test_calibration_is_what_makes_many_heads_rank(default_model) -> None:
    """With the fallback head set (every head of layers 7-21), raw query attention ranks
    poorly and the N/A calibration lifts it well above chance. (With the 8 bundled heads raw
    and calibrated attention come out close: the selected heads already attend to content.)"""
    focuser = Focuser(default_model, heads=middle_layer_heads(default_model.num_layers, default_model.num_heads))
    ours, chance, raw = [], [], []
    for question in QUESTIONS[:16]:
        ranked = sorted(focuser.rank(question.question, question.paragraphs), key=lambda p: p.index)
        ours.append(recall_at(ranking_of([p.score for p in ranked]), question.gold, 2))
        raw.append(recall_at(ranking_of([p.signals["query_attention"] for p in ranked]), question.gold, 2))
        chance.append(recall_at(ranking_of(random_scores(question.paragraphs, seed=question.index)), question.gold, 2))
    recall, recall_raw, recall_chance = (statistics.mean(v) for v in (ours, raw, chance))
    assert recall >= 0.45, (recall, recall_raw, recall_chance)
    assert recall >= recall_raw + 0.15
    assert recall >= recall_chance + 0.2


def test_ranking_costs_no_more_than_one_and_a_half_plain_forward_passes(default_focuser: Focuser) -> None:
    import time

    ratios = []
    for question in QUESTIONS[:5]:
        began = time.perf_counter()
        default_focuser.rank(question.question, question.paragraphs)
        ours = time.perf_counter() - began
        _, forward = _plain_forward_seconds(default_focuser, question)
        ratios.append(ours / forward)
    assert statistics.median(ratios) <= 1.5, ratios


def test_bundled_heads_rank_better_than_all_heads(default_focuser: Focuser) -> None:
    """The claim behind head profiles, on development questions the heads were not detected
    on (the bundled profile used dev 0-299): one capture of every head per question, scored
    once with the bundled heads and once with all 270."""
    from ragfocus.evaluation.hotpotqa_eval import evaluate_hotpotqa

    report = evaluate_hotpotqa(default_focuser, start=2000, limit=16, progress=False, baselines=False)
    recall = {method.method: method.recall_at_2 for method in report.methods}
    assert recall["ragfocus default"] >= recall["all heads"] + 0.05, recall
