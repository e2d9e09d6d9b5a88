"""Explain a focus: why passages were kept, as an HTML report, a batch summary or a terminal table.

>>> from ragfocus import Focuser                                                 # doctest: +SKIP
>>> from ragfocus.explain import explain
>>> explanation = explain(Focuser(), "Who wrote Hamlet?", passages, budget=120)  # doctest: +SKIP
>>> explanation.write_html("why.html")                                          # doctest: +SKIP

``FocusResult.to_html()`` and ``FocusResult.explain()`` reach the same renderers from a result.
"""

from __future__ import annotations

from ragfocus.explain.attention import AttentionMap, PassageHeat, SentenceHeat, TokenHeat, token_attention
from ragfocus.explain.batch import BatchFileError, BatchRow, batch_row, read_batch, render_batch_html
from ragfocus.explain.explanation import Explanation, explain
from ragfocus.explain.html import render_html
from ragfocus.explain.terminal import TerminalView, render_terminal

__all__ = [
    "AttentionMap",
    "BatchFileError",
    "BatchRow",
    "Explanation",
    "PassageHeat",
    "SentenceHeat",
    "TerminalView",
    "TokenHeat",
    "batch_row",
    "explain",
    "read_batch",
    "render_batch_html",
    "render_html",
    "render_terminal",
    "token_attention",
]
