"""Fusion profiles: loading and checks, z-scored fusion, positional bias, the distraction
penalty and slot order (no model needed), and the bundled profile's provenance."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from ragfocus.fusion import (
    FUSED_SIGNALS,
    HEADS_ONLY,
    FusionProfile,
    bundled_fusion,
    fuse,
    interpolate,
    slot_order,
    zscores,
)

PLAIN = FusionProfile(model=None, weights={"retrieval_heads": 1.0, "bm25": 0.5})


def test_zscores_standardize_and_constant_values_give_zeros() -> None:
    values = zscores([1.0, 2.0, 3.0])
    assert values == pytest.approx([-math.sqrt(1.5), 0.0, math.sqrt(1.5)])
    assert zscores([4.0, 4.0]) == [0.0, 0.0]
    assert zscores([]) == []


def test_fuse_is_the_weighted_sum_of_zscores_and_skips_missing_signals() -> None:
    table = [{"retrieval_heads": 0.1, "bm25": 3.0}, {"retrieval_heads": 0.3, "bm25": 1.0}, {"retrieval_heads": 0.2, "bm25": 2.0}]
    heads, bm25 = zscores([0.1, 0.3, 0.2]), zscores([3.0, 1.0, 2.0])
    assert fuse(table, PLAIN) == pytest.approx([h + 0.5 * b for h, b in zip(heads, bm25)])
    # The retriever's weight counts only when every passage has a retriever score.
    with_retriever = replace(PLAIN, weights={**PLAIN.weights, "retriever": 2.0})
    assert fuse(table, with_retriever) == pytest.approx(fuse(table, PLAIN))
    scored = [{**row, "retriever": value} for row, value in zip(table, (0.0, 1.0, 0.5))]
    assert fuse(scored, with_retriever) != pytest.approx(fuse(scored, PLAIN))


def test_a_computed_signal_that_is_not_finite_is_left_out_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    table = [{"retrieval_heads": 0.1, "bm25": 3.0}, {"retrieval_heads": math.nan, "bm25": 1.0}, {"retrieval_heads": 0.2, "bm25": 2.0}]
    with caplog.at_level("WARNING", logger="ragfocus.fusion"):
        fused = fuse(table, PLAIN)
    assert fused == pytest.approx([0.5 * b for b in zscores([3.0, 1.0, 2.0])])
    assert "'retrieval_heads' signal is NaN or infinite for 1 of 3 passages" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="ragfocus.fusion"):
        fuse([{"bm25": 1.0}, {"bm25": 2.0}], PLAIN)  # absent, not broken: quiet
    assert caplog.text == ""


def test_fuse_does_not_depend_on_the_scale_of_a_signal() -> None:
    table = [{"retrieval_heads": v, "bm25": b} for v, b in ((0.1, 5.0), (0.4, 2.0), (0.2, 9.0))]
    scaled = [{"retrieval_heads": row["retrieval_heads"] * 1000, "bm25": row["bm25"] + 7} for row in table]
    assert fuse(table, PLAIN) == pytest.approx(fuse(scaled, PLAIN))


def test_positional_bias_is_removed_only_when_asked() -> None:
    # bm25 does not vary (z = 0), so the fused score is the heads' z-score minus its bias.
    profile = replace(PLAIN, weights={"retrieval_heads": 1.0, "bm25": 1.0}, position_bias={"retrieval_heads": [1.0, 0.0, -1.0]})
    table = [{"retrieval_heads": v, "bm25": 1.0} for v in (0.3, 0.2, 0.1)]
    raw = zscores([0.3, 0.2, 0.1])
    assert fuse(table, profile, positional=False) == pytest.approx(raw)
    assert fuse(table, profile, positional=True) == pytest.approx([raw[0] - 1.0, raw[1], raw[2] + 1.0])


def test_a_single_signal_profile_keeps_the_signals_own_scale() -> None:
    table = [{"retrieval_heads": v} for v in (0.03, -0.01, 0.0)]
    assert fuse(table, HEADS_ONLY) == [0.03, -0.01, 0.0]  # calibrated attention: 0 = content-free


def test_distraction_penalty_pushes_down_distracting_irrelevant_passages_only() -> None:
    profile = FusionProfile(model=None, weights={"retrieval_heads": 1.0, "distraction": 0.1}, distraction_penalty=0.5)
    no_penalty = replace(profile, distraction_penalty=0.0)
    table = [
        {"retrieval_heads": 0.9, "distraction": 0.99},   # relevant and distracting: not penalised
        {"retrieval_heads": 0.1, "distraction": 0.999},  # irrelevant and distracting: penalised
        {"retrieval_heads": 0.2, "distraction": 0.5},    # irrelevant, not distracting
    ]
    with_penalty, without = fuse(table, profile), fuse(table, no_penalty)
    assert with_penalty[0] == pytest.approx(without[0]) and with_penalty[2] == pytest.approx(without[2])
    assert with_penalty[1] < without[1]


def test_abstain_logprob_reading_orders_like_distraction() -> None:
    profile = FusionProfile(model=None, weights={"distraction": 1.0}, distraction_signal="abstain_logprob")
    table = [{"distraction": 1 - math.exp(lp), "abstain_logprob": lp} for lp in (-9.0, -12.0, -10.0)]
    fused = fuse(table, profile)
    assert sorted(range(3), key=lambda i: -fused[i]) == [1, 2, 0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"weights": {"nonsense": 1.0}}, "unknown signals"),
        ({"weights": {"bm25": float("nan")}}, "finite"),
        ({"weights": {"bm25": 0.0}}, "non-zero"),
        ({"position_bias": {"bm25": [0.1]}}, "2 bins"),
        ({"distraction_penalty": -1.0}, "distraction_penalty"),
        ({"distraction_signal": "vibes"}, "distraction_signal"),
        ({"weights": {"learned_heads": 1.0}}, "head_weights"),
    ],
)
def test_bad_profiles_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(PLAIN, **changes)


def test_profile_round_trips_through_json(tmp_path: Path) -> None:
    profile = replace(
        PLAIN, head_weights=[(3, 1, 0.5)], weights={"learned_heads": 1.0}, sort_heads=[(2, 0)], sort_rounds=2,
        position_bias={"learned_heads": [0.1, -0.1]}, slot_strength=[0.0, 1.0], distraction_penalty=0.1,
    )
    assert FusionProfile.load(profile.save(tmp_path / "f.json")) == profile
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a fusion profile"):
        FusionProfile.load(tmp_path / "bad.json")


def test_slot_order_puts_the_strongest_slots_first() -> None:
    assert slot_order([0.0, -1.0, 2.0], 3) == [2, 0, 1]
    assert slot_order([], 3) == [0, 1, 2]
    assert interpolate([0.0, 1.0], 1, 3) == pytest.approx(0.5)


def test_bundled_profile_says_what_it_was_tuned_on_and_never_touched_held_out_data() -> None:
    profile = bundled_fusion("smollm2-135m-instruct.fusion.json")
    assert set(profile.weights) <= set(FUSED_SIGNALS) and profile.weights["learned_heads"] == 1.0
    assert profile.head_weights and max(layer for layer, _, _ in profile.head_weights) <= 23
    tuned = [int(x) for x in profile.data["tuned_on"].split(" ")[0].split("-")]
    checked = [int(x) for x in profile.data["checked_on"].split(" ")[0].split("-")]
    assert max(tuned + checked) < 3000  # development split only
    assert "PLACEHOLDER" not in profile.notes
    assert HEADS_ONLY.weights == {"retrieval_heads": 1.0}

