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


@dataclass(frozen=True)
class TerminalView:
    """What ``FocusResult.explain()`` returns: print it with rich for colours
    (``rich.print(view)``), or ``str(view)`` / ``print(view)`` for plain text."""

    result: FocusResult
    width: int = 120
    """Width of the plain-text rendering of ``str()``."""

    def __rich__(self) -> Any:
        return render_terminal(self.result)

    def __str__(self) -> str:
        from rich.console import Console

        buffer = io.StringIO()
        Console(file=buffer, width=self.width, color_system=None, legacy_windows=False).print(self)
        return buffer.getvalue()


def render_terminal(result: FocusResult) -> Any:
    """A rich renderable: a one-line summary over a table, kept passages in context order first,
    then the dropped ones best first; each row has the fused score and every signal as a bar
    scaled across this query's passages."""
    try:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text
    except ImportError as error:  # rich comes with the demo/eval/test extras
        raise ImportError("the terminal view needs rich: pip install 'ragfocus[demo]' (or pip install rich)") from error

    rows = list(result.kept) + list(result.dropped)
    by_input = sorted(rows, key=lambda p: p.index)
    names = signal_names(by_input)
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
    table = Table(show_lines=True, title_justify="left")
    table.add_column("state", no_wrap=True)
    table.add_column("#", justify="right")
    table.add_column("rank", justify="right")
    table.add_column("score", no_wrap=True)
    table.add_column("signals", no_wrap=True)
    table.add_column("passage", overflow="fold", ratio=1)
    kept_at = {p.index: position for position, p in enumerate(result.kept, start=1)}
    for passage in rows:
        position = kept_at.get(passage.index)
        state = Text(f"kept #{position}", style="bold green") if position else Text("dropped", style="red")
        signals = Text("\n").join(
            Text.assemble((f"{name:<16}", "dim"), (_bar(columns[name][passage.index]), "blue"),
                          f" {number(passage.signals.get(name, math.nan))}")
            for name in names
        )
        table.add_row(
            state,
            str(passage.index),
            str(passage.rank + 1),
            Text.assemble((_bar(score_bars[passage.index]), "green"), f" {number(passage.score)}"),
            signals,
            _label(passage),
        )
    return Group(summary, table)


def _bar(fraction: float | None) -> str:
    if fraction is None:
        return " " * BAR_WIDTH
    filled = round(fraction * BAR_WIDTH)
    return "█" * filled + "░" * (BAR_WIDTH - filled)


def _label(passage: ScoredPassage) -> Any:
    """The passage's id and text as rich ``Text`` (never parsed as markup)."""
    from rich.text import Text

    text = " ".join(passage.text.split())
    text = text if len(text) <= 160 else text[:159] + "…"
    return Text.assemble((f"{passage.id} ", "bold"), text) if passage.id is not None else Text(text)
