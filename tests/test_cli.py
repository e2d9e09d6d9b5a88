"""The ``ragfocus`` command: demo and eval run end to end on the real default model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragfocus.cli import main


def test_demo_retrieves_focuses_and_shows_what_was_kept(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--questions", "1", "--corpus-questions", "8", "--k", "5", "--budget", "200"]) == 0
    shown = capsys.readouterr().out
    assert "Were Scott Derrickson and Ed Wood of the same nationality?" in shown
    assert "kept #1" in shown and "dropped" in shown
    assert "tokens " in shown and "(budget 200," in shown and "% saved" in shown


def test_eval_hotpotqa_reports_every_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "report.json"
    command = ["eval", "hotpotqa", "--start", "20", "--limit", "2", "--no-progress", "--top-k", "4,8", "--timing"]
    assert main([*command, "--json", str(report_path)]) == 0
    shown = capsys.readouterr().out
    for row in ("ragfocus default", "all heads", "middle layers", "qr heads (recall), top 4", "niah heads, top 8", "BM25",
                "all-MiniLM-L6-v2", "random", "plain forward"):
        assert row in shown
    report = json.loads(report_path.read_text())
    assert [m["method"] for m in report["methods"]] == [
        "ragfocus default", "all heads", "middle layers", "qr heads (recall), top 4", "qr heads (recall), top 8",
        "niah heads, top 4", "niah heads, top 8", "BM25", "all-MiniLM-L6-v2", "random",
    ]
    assert all(0.0 <= m["recall_at_2"] <= 1.0 and m["questions"] == 2 for m in report["methods"])
    heads = {m["method"]: m["heads"] for m in report["methods"]}
    assert heads["all heads"] == 270 and heads["middle layers"] == 135 and heads["qr heads (recall), top 4"] == 4
    assert report["forward_seconds_per_query"] > 0 and report["ragfocus_over_forward"] > 0
    # The default row, read from the shared all-heads capture, is what Focuser.rank returns.
    assert report["max_score_difference"] < 1e-4
    assert report["default_heads"].startswith("bundled qr head profile")


def test_eval_refuses_the_held_out_split() -> None:
    with pytest.raises(ValueError, match="held-out"):
        main(["eval", "hotpotqa", "--start", "4990", "--limit", "20", "--no-progress"])


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out
