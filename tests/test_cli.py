"""The ``ragfocus`` command: demo and eval run end to end on the real default model."""

from __future__ import annotations

import json
import math
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
    report_path, dump = tmp_path / "report.json", tmp_path / "dump.jsonl"
    command = ["eval", "hotpotqa", "--start", "20", "--limit", "1", "--no-progress", "--top-k", "4,8", "--timing", "--no-peers"]
    assert main([*command, "--json", str(report_path), "--dump", str(dump)]) == 0
    shown = capsys.readouterr().out
    for row in ("ragfocus default", "learned heads", "attention sort", "distraction", "all heads", "middle layers",
                "qr heads (recall), top 4", "niah heads, top 8", "BM25", "all-MiniLM-L6-v2", "random",
                "ragfocus + retriever (MiniLM score)", "ragfocus default, sentences", "plain forward"):
        assert row in shown, row
    report = json.loads(report_path.read_text())
    methods = {m["method"]: m for m in report["methods"]}
    assert {"ragfocus default", "retrieval heads", "qr heads (recall), top 8", "niah heads, top 4"} <= set(methods)
    for name, method in methods.items():
        if name != "ragfocus default, sentences":
            assert 0.0 <= method["recall_at_2"] <= 1.0 and method["questions"] == 1
            assert set(method["both_kept"]) == {f"{r / 10:.1f}" for r in range(1, 11)}
            assert method["both_kept"]["1.0"] == 1.0  # the whole input keeps both gold paragraphs
    heads = {name: m["heads"] for name, m in methods.items()}
    assert heads["all heads"] == 270 and heads["middle layers"] == 135 and heads["qr heads (recall), top 4"] == 4
    assert report["forward_seconds_per_query"] > 0 and report["ragfocus_over_forward"] > 0
    assert report["default_heads"].startswith("bundled qr head profile")

    # The dump rebuilds the same report, and draws the budget curve.
    plot = tmp_path / "curve.png"
    rebuilt_path = tmp_path / "rebuilt.json"
    assert main(["eval", "report", str(dump), "--json", str(rebuilt_path), "--plot", str(plot)]) == 0
    rebuilt = {m["method"]: m for m in json.loads(rebuilt_path.read_text())["methods"]}
    for name, method in methods.items():
        assert rebuilt[name]["recall_at_2"] == method["recall_at_2"] or math.isnan(method["recall_at_2"])
        assert rebuilt[name]["both_kept"] == method["both_kept"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_refuses_the_held_out_split() -> None:
    with pytest.raises(ValueError, match="held-out"):
        main(["eval", "hotpotqa", "--start", "4990", "--limit", "20", "--no-progress"])


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out
