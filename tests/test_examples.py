"""The examples run as shipped."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_quickstart_runs_and_keeps_the_relevant_passages(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    shown = capsys.readouterr().out
    kept = [line.split()[1] for line in shown.splitlines() if line.startswith("kept")]
    dropped = [line.split()[1] for line in shown.splitlines() if line.startswith("dropped")]
    assert sorted(kept + dropped) == ["banana", "eiffel", "gustave", "louvre"]
    assert "banana" in dropped
    assert "tokens " in shown and "(budget 40)" in shown
