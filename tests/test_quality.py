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

QUESTIONS = hotpotqa(2000, 24)


def test_calibrated_attention_ranks_gold_paragraphs_well_above_chance(default_focuser: Focuser) -> None:
    ours, chance, raw = [], [], []
    for question in QUESTIONS:
        ranked = sorted(default_focuser.rank(question.question, question.paragraphs), key=lambda p: p.index)
        ours.append(recall_at(ranking_of([p.score for p in ranked]), question.gold, 2))
        raw.append(recall_at(ranking_of([p.signals["query_attention"] for p in ranked]), question.gold, 2))
        chance.append(recall_at(ranking_of(random_scores(question.paragraphs, seed=question.index)), question.gold, 2))
    recall, recall_raw, recall_chance = (statistics.mean(v) for v in (ours, raw, chance))
    assert recall >= 0.45, (recall, recall_raw, recall_chance)
    assert recall >= recall_raw + 0.15  # the N/A calibration is what makes attention rank
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
