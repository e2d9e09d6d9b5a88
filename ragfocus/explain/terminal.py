"""The terminal view of one ``FocusResult``: kept and dropped passages with scores and signal
bars, as a rich table (``FocusResult.explain()``, ``ragfocus focus --show``)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

from ragfocus.explain.signals import fractions, number, signal_names
from ragfocus.types import FocusResult, ScoredPassage

BAR_WIDTH = 10
NARROW = 110
"""Consoles narrower than this get the compact table."""


@dataclass(frozen=True)
class TerminalView:
    """What ``FocusResult.explain()`` returns: print it with rich for colours
    (``rich.print(view)``), or ``str(view)`` / ``print(view)`` for plain text."""

    result: FocusResult
    width: int = 120
    """Width of the plain-text rendering of ``str()``."""

    def __rich_console__(self, console: Any, options: Any) -> Any:
        yield render_terminal(self.result, width=options.max_width)

    def __str__(self) -> str:
        from rich.console import Console

        buffer = io.StringIO()
        Console(file=buffer, width=self.width, color_system=None, legacy_windows=False).print(self)
        return buffer.getvalue()


def render_terminal(result: FocusResult, *, width: int | None = None) -> Any:
    """A rich renderable: a summary over a table, kept passages in context order first, then the
    dropped ones best first; each row has the fused score and every signal as a bar scaled
    across this query's passages. Below ``NARROW`` columns of ``width`` the table folds the
    index and rank into the state column and shortens the bars so that it still fits 80."""
    try:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text
    except ImportError as error:  # rich comes with the demo/eval/test extras
        raise ImportError("the terminal view needs rich: pip install 'ragfocus[demo]' (or pip install rich)") from error

    narrow = width is not None and width < NARROW
    bar_width = 6 if narrow else BAR_WIDTH
    rows = list(result.kept) + list(result.dropped)
    by_input = sorted(rows, key=lambda p: p.index)
    names = signal_names(by_input)
    pad = max((len(name) for name in names), default=0)
    columns = {name: dict(zip((p.index for p in by_input), fractions([p.signals.get(name, math.nan) for p in by_input])))
               for name in names}
    score_bars = dict(zip((p.index for p in by_input), fractions([p.score for p in by_input])))
    saved = 100.0 * result.tokens_saved / result.tokens_in if result.tokens_in else 0.0
    budget = "no budget" if result.budget is None else f"budget {result.budget}"
    summary = Text.assemble(
        ("query ", "bold"), (result.query, ""), "\n",
        f"tokens {result.tokens_in} -> {result.tokens_out} ({budget}, {saved:.0f}% saved); "
        f"kept {len(result.kept)} of {len(rows)} passages, order {result.order}; {result.seconds:.2f} s",
    )
    table = Table(show_lines=True)
    table.add_column("state", no_wrap=True, min_width=7)
    if not narrow:
        table.add_column("#", justify="right", no_wrap=True, min_width=2)
        table.add_column("rank", justify="right", no_wrap=True, min_width=4)
    table.add_column("score", no_wrap=True)
    table.add_column("signals", no_wrap=True, overflow="ellipsis")
    table.add_column("passage", overflow="fold", min_width=16, ratio=1)
    kept_at = {p.index: position for position, p in enumerate(result.kept, start=1)}
    for passage in rows:
        position = kept_at.get(passage.index)
        state = Text(f"kept #{position}", style="bold green") if position else Text("dropped", style="red")
        signals = Text("\n").join(
            Text.assemble((f"{name:<{pad}} ", "dim"), (_bar(columns[name][passage.index], bar_width), "blue"),
                          f" {number(passage.signals.get(name, math.nan), digits=3 if narrow else 4)}")
            for name in names
        )
        if narrow:
            state.append(f"\n#{passage.index} rank {passage.rank + 1}", style="")
            cells = [state, Text(number(passage.score, digits=3))]
        else:
            score = Text.assemble((_bar(score_bars[passage.index], bar_width), "green"), f" {number(passage.score)}")
            cells = [state, Text(str(passage.index)), Text(str(passage.rank + 1)), score]
        table.add_row(*cells, signals, _label(passage))
    return Group(summary, table)


def _bar(fraction: float | None, width: int) -> str:
    if fraction is None:
        return " " * width
    filled = round(fraction * width)
    return "█" * filled + "░" * (width - filled)


def _label(passage: ScoredPassage) -> Any:
    """The passage's id and text as rich ``Text`` (never parsed as markup)."""
    from rich.text import Text

    text = " ".join(passage.text.split())
    text = text if len(text) <= 160 else text[:159] + "…"
    return Text.assemble((f"{passage.id} ", "bold"), text) if passage.id is not None else Text(text)
