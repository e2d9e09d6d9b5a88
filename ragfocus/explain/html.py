"""The explain report of one query: a self-contained HTML page.

No network, no scripts, no external CSS: one file that opens anywhere. Every string that
comes from the caller (query, passage text, ids, metadata) goes through ``html.escape``;
style attributes are built only from numbers computed here.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping

from ragfocus.explain.attention import AttentionMap, PassageHeat
from ragfocus.explain.signals import SIGNAL_HELP, fractions, number, signal_names
from ragfocus.types import FocusResult, ScoredPassage

POSITIVE = (214, 96, 20)
"""Colour of tokens that receive more attention from the query than from "N/A" (orange)."""
NEGATIVE = (40, 110, 190)
"""Colour of tokens that receive less (blue)."""

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;background:#f5f6f8}
main{max-width:1100px;margin:0 auto;padding:18px 22px 40px}
h1{font-size:22px;margin:4px 0 2px}h2{font-size:18px;margin:26px 0 8px;border-bottom:1px solid #d5d9e0;padding-bottom:4px}
h3{font-size:15px;margin:14px 0 6px}
.query{font-size:17px;background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:8px 12px;white-space:pre-wrap}
.summary{display:flex;flex-wrap:wrap;gap:6px 22px;margin:10px 0}.summary div{min-width:90px}
.summary dt{font-size:12px;color:#5b6573}.summary dd{margin:0;font-weight:600}
.budgetbar{position:relative;height:14px;background:#e3e6eb;border-radius:7px;max-width:640px;margin:4px 0 2px}
.budgetbar .out{position:absolute;left:0;top:0;bottom:0;background:#2f9e61;border-radius:7px}
.budgetbar .limit{position:absolute;top:-3px;bottom:-3px;width:2px;background:#1d2430}
.caption{font-size:12px;color:#5b6573}
ol.order{padding-left:26px;margin:4px 0}ol.order li{margin:2px 0}
.passage{background:#fff;border:1px solid #d5d9e0;border-left:6px solid #9aa3ae;border-radius:6px;margin:12px 0;padding:10px 14px}
.passage.kept{border-left-color:#2f9e61}.passage.dropped{border-left-color:#c0392b;background:#fcfcfd}
.passage.empty{border-left-color:#d5d9e0}
.passage header{display:flex;flex-wrap:wrap;gap:4px 14px;align-items:baseline}
.badge{font-weight:700;font-size:13px;padding:1px 8px;border-radius:10px;color:#fff}
.badge.kept{background:#2f9e61}.badge.dropped{background:#c0392b}.badge.empty{background:#9aa3ae}
.meta{font-size:13px;color:#5b6573}
table.signals{border-collapse:collapse;margin:6px 0;font-size:13px}
table.signals th{text-align:left;font-weight:500;color:#3b4452;padding:1px 10px 1px 0;white-space:nowrap}
table.signals td{padding:1px 6px 1px 0}td.num{font-family:ui-monospace,Menlo,Consolas,monospace;text-align:right;min-width:70px}
.bar{display:inline-block;width:220px;height:10px;background:#eceef2;border-radius:3px;vertical-align:middle}
.bar span{display:block;height:100%;background:#5469d4;border-radius:3px}
tr.score .bar span{background:#2f9e61}
.text{white-space:pre-wrap;margin:8px 0 4px;padding:6px 8px;border-radius:4px;background:#fafbfc;border:1px solid #eceef2}
.tok{border-radius:2px}.tok.sink{text-decoration:underline dotted #9aa3ae}
.legend{display:flex;gap:10px;align-items:center;font-size:13px;margin:6px 0}
.legend .swatch{display:inline-block;width:46px;height:12px;border-radius:2px;vertical-align:middle}
.note{background:#fff4d6;border:1px solid #e9c46a;border-radius:6px;padding:6px 10px}
ol.sentences{padding-left:22px;margin:4px 0;font-size:14px}ol.sentences li{margin:3px 0}
ol.sentences li.dropped{color:#7b8491;text-decoration:line-through}
.sentence-state{font-size:12px;font-weight:600;margin-right:6px}
details{margin:4px 0}summary{cursor:pointer;font-size:13px;color:#3b4452}
pre{white-space:pre-wrap;font-size:12px;background:#f5f6f8;padding:6px;border-radius:4px;margin:4px 0}
footer{font-size:12px;color:#5b6573;margin-top:30px}
"""


def render_html(result: FocusResult, attention: AttentionMap | None = None, *, model: str | None = None) -> str:
    """The report of ``result`` as one HTML document.

    With ``attention`` (``ragfocus.explain.token_attention``) every passage's text is a heat
    map of calibrated attention, and its sentences are scored when the map has them;
    without it the text is shown plain with a note saying so.
    """
    passages = sorted(result.kept + result.dropped, key=lambda p: p.index)
    signals = signal_names(passages)
    bars = {name: dict(zip((p.index for p in passages), fractions([p.signals.get(name, math.nan) for p in passages])))
            for name in signals}
    bars["score"] = dict(zip((p.index for p in passages), fractions([p.score for p in passages])))
    output_position = {p.index: position for position, p in enumerate(result.kept, start=1)}
    scale = attention.scale() if attention is not None else 1.0
    cards = "\n".join(
        _passage_card(p, output_position.get(p.index), signals, bars, attention, scale) for p in passages
    )
    title = f"ragfocus explain: {result.query}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<h1>Why these passages were kept</h1>
<div class="query" id="query">{_e(result.query)}</div>
{_summary(result, len(passages), model)}
<section id="output-order">
<h2>Output order</h2>
{_order_lists(result)}
</section>
<section id="input-order">
<h2>Passages in input order</h2>
{_legend(attention, scale)}
{cards}
</section>
<footer>Made by ragfocus explain. Bars compare each signal across this query's passages (shortest = lowest,
longest = highest); the numbers are the raw values. The fused score is in per-query z units (0 = the query's
average passage) unless the Focuser fuses retrieval heads alone.</footer>
</main>
</body>
</html>
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _summary(result: FocusResult, count: int, model: str | None) -> str:
    saved = 100.0 * result.tokens_saved / result.tokens_in if result.tokens_in else 0.0
    items = [
        ("tokens in", str(result.tokens_in)),
        ("tokens out", str(result.tokens_out)),
        ("saved", f"{saved:.0f}%"),
        ("budget", "none" if result.budget is None else f"{result.budget} tokens"),
        ("kept", f"{len(result.kept)} of {count} passages"),
        ("order", result.order),
        ("time", f"{result.seconds:.2f} s"),
    ]
    if model:
        items.append(("scorer", model))
    cells = "".join(f'<div><dt>{_e(name)}</dt><dd id="summary-{_e(name.replace(" ", "-"))}">{_e(value)}</dd></div>'
                    for name, value in items)
    full = max(result.tokens_in, result.budget or 0, 1)
    bar = f'<span class="out" style="width:{100.0 * result.tokens_out / full:.2f}%"></span>'
    if result.budget is not None:
        bar += f'<span class="limit" style="left:{100.0 * min(result.budget, full) / full:.2f}%"></span>'
    caption = "tokens out (green) against tokens in" + ("; the line marks the budget" if result.budget is not None else "")
    return (f'<dl class="summary">{cells}</dl>\n<div class="budgetbar" role="img" aria-label="{_e(caption)}">{bar}</div>'
            f'\n<div class="caption">{_e(caption)}</div>')


def _order_lists(result: FocusResult) -> str:
    def item(p: ScoredPassage) -> str:
        label = f"passage {p.index}" + (f" ({p.id})" if p.id is not None else "")
        return (f'<li data-index="{p.index}"><a href="#passage-{p.index}">{_e(label)}</a> '
                f'<span class="meta">score {_e(number(p.score))}, rank {p.rank + 1}</span></li>')

    kept = "".join(item(p) for p in result.kept) or "<li>nothing kept</li>"
    dropped = "".join(item(p) for p in result.dropped) or "<li>nothing dropped</li>"
    return (f'<h3>Kept, in the order of the context</h3>\n<ol class="order" id="kept-order">{kept}</ol>\n'
            f'<h3>Dropped, best first</h3>\n<ol class="order" id="dropped-order">{dropped}</ol>')


def _legend(attention: AttentionMap | None, scale: float) -> str:
    if attention is None:
        return '<p class="note" id="heat-note">No heat map: this report was made without per-token attention.</p>'
    parts = []
    if attention.note:
        parts.append(f'<p class="note" id="heat-note">{_e(attention.note)}</p>')
    if attention.passages:
        negative, positive = _colour(-scale, scale), _colour(scale, scale)
        parts.append(
            f'<div class="legend"><span>heat map: calibrated attention per token ({attention.heads} heads; '
            f'query minus N/A)</span><span class="swatch" style="background:{negative}"></span><span>less than N/A</span>'
            f'<span class="swatch" style="background:{positive}"></span><span>more (full colour at {scale:.3g})</span>'
            '<span class="tok sink">dotted</span><span>sink, masked</span></div>'
        )
    return "\n".join(parts)


def _passage_card(
    p: ScoredPassage,
    position: int | None,
    signals: list[str],
    bars: Mapping[str, Mapping[int, float | None]],
    attention: AttentionMap | None,
    scale: float,
) -> str:
    if not p.passage.text.strip():
        state, badge = "empty", "dropped (empty)"
    elif position is not None:
        state, badge = "kept", f"kept #{position} in context"
    else:
        state, badge = "dropped", "dropped"
    header = [f'<span class="badge {state}">{_e(badge)}</span>', f"<strong>passage {p.index}</strong>",
              f'<span class="meta">rank {p.rank + 1}</span>']
    if p.id is not None:
        header.append(f'<span class="meta">id <code class="passage-id">{_e(p.id)}</code></span>')
    rows = [_bar_row("score (fused)", p.score, bars["score"][p.index], "score", "the fused relevance the ranking uses")]
    rows += [_bar_row(name, p.signals.get(name, math.nan), bars[name][p.index], "signal", SIGNAL_HELP.get(name, ""))
             for name in signals]
    heat = attention.passages.get(p.index) if attention is not None else None
    body = [
        f'<article class="passage {state}" id="passage-{p.index}" data-index="{p.index}" data-state="{state}">',
        f'<header>{"".join(header)}</header>',
        f'<table class="signals">{"".join(rows)}</table>',
        f'<div class="text">{_heat_text(p.passage.text, heat, scale) if p.passage.text.strip() else "<em>(empty passage)</em>"}</div>',
    ]
    if heat is not None and heat.sentences:
        body.append(_sentences(p, heat, position is not None, scale))
    if position is not None and p.text != p.passage.text:
        body.append(f'<details><summary>text kept after sentence pruning</summary><pre class="kept-text">{_e(p.text)}</pre></details>')
    if p.metadata:
        try:
            dumped = json.dumps(dict(p.metadata), indent=2, ensure_ascii=False, default=str)
        except (TypeError, ValueError):  # keys JSON cannot hold (tuples, objects)
            dumped = repr(dict(p.metadata))
        body.append(f'<details><summary>metadata</summary><pre class="metadata">{_e(dumped)}</pre></details>')
    body.append("</article>")
    return "\n".join(body)


def _bar_row(name: str, value: float, fraction: float | None, kind: str, help_text: str) -> str:
    width = "" if fraction is None else f'<span style="width:{4.0 + 96.0 * fraction:.1f}%"></span>'
    return (f'<tr class="{kind}"><th title="{_e(help_text)}">{_e(name)}</th><td><span class="bar">{width}</span></td>'
            f'<td class="num">{_e(number(value))}</td></tr>')


def _heat_text(text: str, heat: PassageHeat | None, scale: float) -> str:
    if heat is None:
        return _e(text)
    parts: list[str] = []
    cursor = 0
    for token in heat.tokens:
        if token.start > cursor:
            parts.append(_e(text[cursor:token.start]))
        piece = _e(text[token.start:token.end])
        if math.isnan(token.value):
            parts.append(f'<span class="tok sink" title="sink (masked)">{piece}</span>')
        else:
            parts.append(f'<span class="tok" style="background-color:{_colour(token.value, scale)}" '
                         f'title="{token.value:+.3g}">{piece}</span>')
        cursor = token.end
    parts.append(_e(text[cursor:]))
    return "".join(parts)


def _sentences(p: ScoredPassage, heat: PassageHeat, kept: bool, scale: float) -> str:
    items = []
    for sentence in heat.sentences:
        survived = kept and sentence.text in p.text
        state = "kept" if survived else "dropped"
        value = sentence.score if math.isfinite(sentence.score) else 0.0
        fraction = min(1.0, abs(value) / scale) if scale > 0 else 0.0  # the heat map's scale: same units
        bar = f'<span class="bar"><span style="width:{100.0 * fraction:.1f}%;background:{_colour(value, scale)}"></span></span>'
        items.append(f'<li class="{state}"><span class="sentence-state">{state}</span>{bar} '
                     f'<span class="num">{_e(number(sentence.score))}</span> {_e(sentence.text)}</li>')
    return f'<h3>Sentences (mean calibrated attention)</h3><ol class="sentences">{"".join(items)}</ol>'


def _colour(value: float, scale: float) -> str:
    strength = min(1.0, abs(value) / scale) if scale > 0 else 0.0
    red, green, blue = POSITIVE if value >= 0 else NEGATIVE
    return f"rgba({red},{green},{blue},{0.85 * strength:.3f})"
