"""examples/langchain_rag.py runs as shipped: faiss + MiniLM -> RagFocusRetriever -> prompt."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from ragfocus import Focuser

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "langchain_rag.py"


def test_the_langchain_example_prints_kept_passages_and_the_prompt(
    focuser: Focuser, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("faiss")
    pytest.importorskip("sentence_transformers")
    example = runpy.run_path(str(EXAMPLE), run_name="langchain_rag")
    example["main"](["--questions", "2", "--corpus", "3", "--k", "5", "--budget", "120"])
    shown = capsys.readouterr().out

    assert "Q0: Were Scott Derrickson and Ed Wood of the same nationality?" in shown
    assert "Q1: " in shown and "Q2: " not in shown
    kept = [line for line in shown.splitlines() if line.strip().startswith("kept rank")]
    assert 2 <= len(kept) <= 10
    assert shown.count("[human] ") == 2 and shown.count("[system] ") == 2
    assert "missed gold" in shown
