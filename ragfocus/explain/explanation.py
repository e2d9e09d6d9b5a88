"""``explain``: focus one query and keep what is needed to show why passages were kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragfocus.explain.attention import AttentionMap, token_attention
from ragfocus.passages import PassageLike, as_passages
from ragfocus.types import FocusResult

if TYPE_CHECKING:
    from ragfocus.explain.terminal import TerminalView
    from ragfocus.focuser import Focuser


@dataclass(frozen=True)
class Explanation:
    """A ``FocusResult`` with the heat map of calibrated attention over its passages."""

    result: FocusResult
    attention: AttentionMap
    model: str
    """The scorer's name, shown in the report."""

    def to_html(self) -> str:
        """The self-contained HTML report (no network, no scripts)."""
        from ragfocus.explain.html import render_html

        return render_html(self.result, self.attention, model=self.model)

    def write_html(self, path: str | Path) -> Path:
        """Write ``to_html()`` to ``path`` (UTF-8) and return the path."""
        target = Path(path)
        target.write_text(self.to_html(), encoding="utf-8")
        return target

    def terminal(self) -> TerminalView:
        """The rich table of kept and dropped passages (``FocusResult.explain``)."""
        return self.result.explain()


def explain(focuser: Focuser, query: str, passages: Sequence[PassageLike], **options: Any) -> Explanation:
    """``focuser.focus(query, passages, **options)``, plus the per-token calibrated attention of
    every non-empty passage for the heat map (one extra capture over the same prompt; with
    ``granularity="sentence"`` the sentences' scores too).

    >>> from ragfocus import Focuser                                           # doctest: +SKIP
    >>> passages = ["Hamlet is a tragedy by Shakespeare.", "Paris is in France."]
    >>> explanation = explain(Focuser(distraction=False), "Who wrote Hamlet?", passages, budget=10)  # doctest: +SKIP
    >>> [p.index for p in explanation.result.kept], explanation.write_html("why.html")              # doctest: +SKIP
    ([0], PosixPath('why.html'))
    """
    items = as_passages(passages)
    result = focuser.focus(query, items, **options)
    attention = token_attention(focuser, query, items, sentences=options.get("granularity") == "sentence")
    return Explanation(result=result, attention=attention, model=focuser.loaded.name)
