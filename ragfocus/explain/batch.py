"""A summary page over many focused queries, from a batch output file (JSONL).

One JSON object a line, at least::

    {"id": "q1", "query": "...", "tokens_in": 1480, "tokens_out": 271,
     "kept":    [{"index": 3, "score": 1.21, "signals": {"bm25": 4.2, ...}}, ...],
     "dropped": [{"index": 0, "score": -0.4}, ...]}

``kept`` is in output order, ``dropped`` best first; ``signals`` and ``budget`` are optional;
a ``null`` score (an empty passage) is counted but not plotted. ``batch_row`` writes this
schema from a ``FocusResult``. The page embeds its charts (matplotlib, Agg) as base64 PNG data
URIs: one file, no network.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragfocus.types import FocusResult, ScoredPassage

SHOWN_ROWS = 500
"""Rows listed in the page's table (the charts use every row)."""


class BatchFileError(ValueError):
    """A batch output file that does not follow the schema; the message names line and field."""


@dataclass(frozen=True)
class BatchPassage:
    index: int
    score: float
    """NaN when the file has ``null`` (an empty passage)."""
    signals: Mapping[str, float]


@dataclass(frozen=True)
class BatchRow:
    id: str
    query: str
    tokens_in: int
    tokens_out: int
    kept: tuple[BatchPassage, ...]
    dropped: tuple[BatchPassage, ...]
    budget: int | None = None

    @property
    def saved_share(self) -> float:
        """Share of the input's tokens left out, in [0, 1] (0 for an empty input)."""
        return 1.0 - self.tokens_out / self.tokens_in if self.tokens_in else 0.0


def batch_row(result: FocusResult, id: str) -> dict[str, Any]:
    """``result`` as one JSON-ready row of the batch schema (non-finite numbers become ``null``)."""
    row: dict[str, Any] = {
        "id": id,
        "query": result.query,
        "tokens_in": result.tokens_in,
        "tokens_out": result.tokens_out,
        "kept": [_passage_row(p) for p in result.kept],
        "dropped": [_passage_row(p) for p in result.dropped],
    }
    if result.budget is not None:
        row["budget"] = result.budget
    return row


def read_batch(path: str | Path) -> list[BatchRow]:
    """Read and check a batch output file.

    Raises:
        BatchFileError: (a ``ValueError``) naming the line and the field that is missing or of the wrong type.
    """
    rows = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise BatchFileError(f"{where}: not JSON ({error.msg})") from None
            rows.append(_row(record, where))
    return rows


def render_batch_html(rows: Sequence[BatchRow], *, source: str | None = None) -> str:
    """The summary page: totals, the distributions of tokens saved, of scores (kept against
    dropped) and of kept input positions, signal distributions when rows carry signals, and a
    table of the rows."""
    if not rows:
        raise ValueError("the batch file has no rows: nothing to summarize")
    figures = [
        ("tokens", "Tokens saved", _tokens_figure(rows)),
        ("scores", "Scores of kept and dropped passages", _scores_figure(rows)),
        ("positions", "Which input positions are kept", _positions_figure(rows)),
    ]
    signals = _signals_figure(rows)
    if signals is not None:
        figures.append(("signals", "Signals of kept and dropped passages", signals))
    images = "\n".join(
        f'<figure id="figure-{key}"><img alt="{html.escape(title)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for key, title, png in figures
    )
    total_in = sum(row.tokens_in for row in rows)
    total_out = sum(row.tokens_out for row in rows)
    facts = [
        ("queries", str(len(rows))),
        ("tokens in", str(total_in)),
        ("tokens out", str(total_out)),
        ("saved overall", f"{100.0 * (1 - total_out / total_in):.1f}%" if total_in else "0%"),
        ("median saved", f"{100.0 * statistics.median(row.saved_share for row in rows):.1f}%"),
        ("passages kept per query (mean)", f"{statistics.fmean(len(row.kept) for row in rows):.2f}"),
    ]
    summary = "".join(f"<div><dt>{html.escape(name)}</dt><dd>{html.escape(value)}</dd></div>" for name, value in facts)
    table_rows = "".join(_table_row(row) for row in rows[:SHOWN_ROWS])
    more = f"<p>{len(rows) - SHOWN_ROWS} more rows not listed (all are in the charts).</p>" if len(rows) > SHOWN_ROWS else ""
    origin = f" of {html.escape(source)}" if source else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ragfocus batch summary{origin}</title>
<style>
body{{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d2430;background:#f5f6f8}}
main{{max-width:1100px;margin:0 auto;padding:18px 22px 40px}}
dl{{display:flex;flex-wrap:wrap;gap:6px 22px}}dt{{font-size:12px;color:#5b6573}}dd{{margin:0;font-weight:600}}
figure{{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:8px;margin:14px 0}}
figure img{{max-width:100%}}figcaption{{font-size:13px;color:#5b6573}}
table{{border-collapse:collapse;font-size:13px;background:#fff}}td,th{{border:1px solid #d5d9e0;padding:3px 8px;text-align:left}}
</style>
</head>
<body>
<main>
<h1>ragfocus batch summary{origin}</h1>
<dl>{summary}</dl>
{images}
<h2>Rows</h2>
<table id="rows"><thead><tr><th>id</th><th>query</th><th>tokens in</th><th>tokens out</th><th>saved</th>
<th>kept (output order)</th><th>dropped</th></tr></thead><tbody>{table_rows}</tbody></table>
{more}
</main>
</body>
</html>
"""


def _passage_row(passage: ScoredPassage) -> dict[str, Any]:
    return {
        "index": passage.index,
        "score": passage.score if math.isfinite(passage.score) else None,
        "signals": {name: value if math.isfinite(value) else None for name, value in passage.signals.items()},
    }


def _row(record: object, where: str) -> BatchRow:
    if not isinstance(record, dict):
        raise BatchFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for name in ("id", "query", "tokens_in", "tokens_out", "kept", "dropped"):
        if name not in record:
            raise BatchFileError(f"{where}: missing field {name!r} (every row needs id, query, tokens_in, tokens_out, kept, dropped)")
    for name in ("tokens_in", "tokens_out"):
        if isinstance(record[name], bool) or not isinstance(record[name], int):
            raise BatchFileError(f"{where}: {name} must be an integer, got {record[name]!r}")
    budget = record.get("budget")
    return BatchRow(
        id=str(record["id"]),
        query=str(record["query"]),
        tokens_in=record["tokens_in"],
        tokens_out=record["tokens_out"],
        kept=_passages(record["kept"], f"{where}, kept"),
        dropped=_passages(record["dropped"], f"{where}, dropped"),
        budget=budget if isinstance(budget, int) and not isinstance(budget, bool) else None,
    )


def _passages(items: object, where: str) -> tuple[BatchPassage, ...]:
    if not isinstance(items, list):
        raise BatchFileError(f"{where}: expected a list of passages, got {type(items).__name__}")
    found = []
    for position, item in enumerate(items):
        if not isinstance(item, dict) or "index" not in item or "score" not in item:
            raise BatchFileError(f"{where}[{position}]: each passage needs 'index' and 'score'")
        index, score = item["index"], item["score"]
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise BatchFileError(f"{where}[{position}]: index must be a non-negative integer, got {index!r}")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise BatchFileError(f"{where}[{position}]: score must be a number or null, got {score!r}")
        signals = item.get("signals") or {}
        if not isinstance(signals, dict):
            raise BatchFileError(f"{where}[{position}]: signals must be an object, got {type(signals).__name__}")
        clean = {str(name): float(value) for name, value in signals.items()
                 if isinstance(value, (int, float)) and not isinstance(value, bool)}
        found.append(BatchPassage(index, math.nan if score is None else float(score), clean))
    return tuple(found)


def _finite(values: Iterable[float]) -> list[float]:
    return [value for value in values if math.isfinite(value)]


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float, height: float, columns: int = 1) -> tuple[Any, Any]:
    """A figure that is never registered with pyplot (no global state, no display backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, axes


def _tokens_figure(rows: Sequence[BatchRow]) -> str:
    figure, (share, scatter) = _figure(10, 3.6, 2)
    saved = [100.0 * row.saved_share for row in rows]
    share.hist(saved, bins=min(20, max(5, len(rows))), range=(0, 100), color="#2f9e61")
    share.axvline(statistics.median(saved), color="#1d2430", linestyle="--", linewidth=1, label="median")
    share.set_xlabel("tokens saved (% of the input)")
    share.set_ylabel("queries")
    share.legend(fontsize=8)
    scatter.scatter([row.tokens_in for row in rows], [row.tokens_out for row in rows], s=14, color="#5469d4")
    top = max(max(row.tokens_in for row in rows), 1)
    scatter.plot([0, top], [0, top], color="#9aa3ae", linewidth=1, linestyle=":", label="nothing saved")
    budgets = [row.budget for row in rows if row.budget is not None]
    if budgets and len(set(budgets)) == 1:
        scatter.axhline(budgets[0], color="#c0392b", linewidth=1, label=f"budget {budgets[0]}")
    scatter.set_xlabel("tokens in")
    scatter.set_ylabel("tokens out")
    scatter.legend(fontsize=8)
    return _png(figure)


def _scores_figure(rows: Sequence[BatchRow]) -> str:
    figure, (axis,) = _figure(10, 3.2)
    kept = _finite(p.score for row in rows for p in row.kept)
    dropped = _finite(p.score for row in rows for p in row.dropped)
    both = kept + dropped
    if both:
        low, high = min(both), max(both)
        bins = 30 if high > low else 1
        axis.hist([kept, dropped], bins=bins, range=(low, high if high > low else low + 1), label=["kept", "dropped"],
                  color=["#2f9e61", "#c0392b"], alpha=0.8)
        axis.legend(fontsize=8)
    axis.set_xlabel("fused score")
    axis.set_ylabel("passages")
    return _png(figure)


def _positions_figure(rows: Sequence[BatchRow]) -> str:
    figure, (share, first) = _figure(10, 3.2, 2)
    width = max((p.index for row in rows for p in row.kept + row.dropped), default=-1) + 1
    present = [0] * width
    kept = [0] * width
    leading = [0] * width
    for row in rows:
        for passage in row.kept + row.dropped:
            present[passage.index] += 1
        for passage in row.kept:
            kept[passage.index] += 1
        if row.kept:
            leading[row.kept[0].index] += 1
    positions = list(range(width))
    share.bar(positions, [k / n if n else 0.0 for k, n in zip(kept, present)], color="#2f9e61")
    share.set_xlabel("input position")
    share.set_ylabel("share of queries keeping it")
    share.set_ylim(0, 1.02)
    first.bar(positions, leading, color="#5469d4")
    first.set_xlabel("input position")
    first.set_ylabel("queries where it comes first")
    for axis in (share, first):
        axis.set_xticks(positions if width <= 20 else positions[:: max(1, width // 20)])
    return _png(figure)


def _signals_figure(rows: Sequence[BatchRow]) -> str | None:
    names: dict[str, None] = {}
    for row in rows:
        for passage in row.kept + row.dropped:
            names.update(dict.fromkeys(passage.signals))
    if not names:
        return None
    shown = list(names)[:8]
    figure, axes = _figure(min(2.4 * len(shown), 16), 3.0, len(shown))
    for axis, name in zip(axes, shown):
        kept = _finite(p.signals.get(name, math.nan) for row in rows for p in row.kept)
        dropped = _finite(p.signals.get(name, math.nan) for row in rows for p in row.dropped)
        data = [values if values else [math.nan] for values in (kept, dropped)]
        axis.boxplot(data, tick_labels=["kept", "dropped"], widths=0.6)
        axis.set_title(name, fontsize=9)
        axis.tick_params(labelsize=8)
    return _png(figure)


def _table_row(row: BatchRow) -> str:
    cells = [
        row.id, row.query, str(row.tokens_in), str(row.tokens_out), f"{100.0 * row.saved_share:.0f}%",
        ", ".join(str(p.index) for p in row.kept), str(len(row.dropped)),
    ]
    return "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"
