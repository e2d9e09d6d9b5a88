"""``ragfocus eval squad`` on the real default model, tuning split (articles 0-9) only."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from ragfocus import Focuser
from ragfocus.evaluation import squad_eval
from ragfocus.evaluation.squad_eval import (
    BM25,
    FUSED,
    MINILM,
    TUNING,
    SquadReport,
    add_squad_parser,
    evaluate_squad,
    run_squad,
    squad_pairs,
)


@pytest.fixture(scope="module")
def report(default_focuser: Focuser) -> SquadReport:
    return evaluate_squad(default_focuser, articles=TUNING, limit=24, seed=0, progress=False)


def test_every_signal_gets_an_auroc(report: SquadReport, default_focuser: Focuser) -> None:
    (scored,) = default_focuser.rank("Who?", ["Somebody."])
    names = [result.name for result in report.signals]
    assert set(names) == {*scored.signals, FUSED, MINILM, BM25}
    assert len(names) == len(set(names))
    for result in report.signals:
        assert 0.0 <= result.auroc <= 1.0, result
        assert result.used == 24 and result.positives == 12 and result.negatives == 12
        assert result.ci_low is not None and result.ci_high is not None
        assert 0.0 <= result.ci_low <= result.ci_high <= 1.0
    aurocs = [result.auroc for result in report.signals]
    assert aurocs == sorted(aurocs, reverse=True)
    assert (report.pairs, report.positives, report.negatives) == (24, 12, 12)
    assert report.articles == (0, 9) and report.split == "tuning"
    assert report.focuser_seconds_per_pair > 0
    assert all(set(row.values) == set(names) for row in report.values)


def test_pairs_are_balanced_deterministic_and_from_the_asked_articles() -> None:
    pairs = squad_pairs(TUNING, 24, seed=0)
    assert sum(pair.answerable for pair in pairs) == 12 and len(pairs) == 24
    assert all(pair.article in TUNING for pair in pairs)
    assert all(pair.paragraph not in pair.others and pair.others for pair in pairs)
    assert len({pair.id for pair in pairs}) == 24
    assert [pair.id for pair in squad_pairs(TUNING, 24, seed=0)] == [pair.id for pair in pairs]
    assert [pair.id for pair in squad_pairs(TUNING, 24, seed=1)] != [pair.id for pair in pairs]


def test_bad_articles_and_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="outside SQuAD v2.0 dev"):
        squad_pairs(range(30, 36), 24)
    with pytest.raises(ValueError, match="outside SQuAD v2.0 dev"):
        squad_pairs(range(-1, 3), 24)
    with pytest.raises(ValueError, match="no articles"):
        squad_pairs(range(5, 5), 24)
    with pytest.raises(ValueError, match="even"):
        squad_pairs(TUNING, 25)


def test_auroc_skips_non_finite_values() -> None:
    assert squad_eval.auroc([True, False, True, False], [2.0, 1.0, math.nan, math.inf]) == (1.0, 2)
    assert math.isnan(squad_eval.auroc([True, False], [1.0, math.nan])[0])
    low, high = squad_eval.bootstrap_interval([True] * 5 + [False] * 5, [float(i) for i in range(10)], resamples=50)
    assert 0.0 <= low <= high <= 0.2  # positives are the low values: AUROC near 0


def test_run_squad_writes_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_focuser: Focuser, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(squad_eval, "_load_focuser", lambda model: default_focuser)
    parser = argparse.ArgumentParser()
    add_squad_parser(parser.add_subparsers())
    path = tmp_path / "squad.json"
    args = parser.parse_args(
        ["squad", "--articles", "0-9", "--limit", "4", "--bootstrap", "20", "--no-progress", "--json", str(path)]
    )
    assert args.run is run_squad and args.articles == range(10)
    assert run_squad(args) == 0
    assert "SQuAD v2.0 dev articles 0-9" in capsys.readouterr().out
    written = json.loads(path.read_text())
    assert written["pairs"] == 4 and written["positives"] == 2 and written["bootstrap"] == 20
    assert {row["name"] for row in written["signals"]} >= {FUSED, MINILM, BM25}
    with pytest.raises(SystemExit):
        parser.parse_args(["squad", "--articles", "nine"])
    with pytest.raises(ValueError, match="outside"):
        run_squad(parser.parse_args(["squad", "--articles", "30-40"]))
