"""Terminal tables for the demo and the benchmarks (rich)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from ragfocus.evaluation.demo import DemoCase
from ragfocus.evaluation.hotpotqa_eval import REPORT_RATIO, EvalReport


def render_demo(console: Console, model: str, corpus_size: int, index_seconds: float, cases: list[DemoCase]) -> None:
    console.print(f"[bold]ragfocus demo[/] — scorer {model}; faiss + all-MiniLM-L6-v2 over {corpus_size} HotpotQA "
                  f"dev paragraphs (indexed in {index_seconds:.1f} s)\n")
    for case in cases:
        result = case.result
        kept_order = [p.index for p in result.kept]
        table = Table(title=f"Q: {case.question.question}\nanswer: {case.question.answer}", title_justify="left", show_lines=False)
        for column in ("#", "minilm", "ragfocus", "state", "gold", "passage"):
            table.add_column(column, no_wrap=True)
        for scored in sorted(result.kept + result.dropped, key=lambda p: p.index):
            state = f"[green]kept #{kept_order.index(scored.index) + 1}[/]" if scored.index in kept_order else "[red]dropped[/]"
            title = scored.metadata.get("title", "")
            table.add_row(
                str(scored.index + 1),
                f"{scored.signals.get('retriever', float('nan')):.3f}",
                f"{scored.score:+.3f}",
                state,
                "★" if title in case.gold_titles else "",
                _shorten(scored.text, 60),
            )
        console.print(table)
        saved = 100.0 * result.tokens_saved / result.tokens_in if result.tokens_in else 0.0
        gold_kept = sum(1 for p in result.kept if p.metadata.get("title") in case.gold_titles)
        gold_found = sum(1 for p in case.retrieved if p.metadata.get("title") in case.gold_titles)
        console.print(
            f"tokens {result.tokens_in} -> {result.tokens_out} (budget {result.budget}, {saved:.0f}% saved); "
            f"gold paragraphs retrieved {gold_found}, kept {gold_kept}; {result.seconds:.2f} s\n"
        )


def render_eval(console: Console, report: EvalReport) -> None:
    table = Table(title=f"HotpotQA dev {report.start}-{report.start + report.limit - 1} ({report.limit} questions, "
                        f"~{report.mean_prompt_tokens:.0f} prompt tokens), scorer {report.model}")
    ratio = f"{REPORT_RATIO:.1f}"
    for column in ("method", "heads", "recall@2", "both@4", f"both kept @{ratio}", f"answer kept @{ratio}", "s/query (median)"):
        table.add_column(column)
    for method in report.methods:
        seconds = "shared pass" if method.seconds_per_query is None else f"{method.seconds_per_query:.3f}"
        heads = "" if method.heads is None else str(method.heads)
        table.add_row(
            method.method, heads, _number(method.recall_at_2), _number(method.both_at_4),
            _number(method.both_kept.get(ratio)), _number(method.answer_kept), seconds,
        )
    console.print(table)
    console.print(f"ragfocus default = {report.fusion}; retrieval heads: {report.default_heads}. "
                  f"answer kept: {report.answer_questions} questions without a yes/no answer.")
    if report.capture_seconds_per_query is not None:
        console.print(f"Head rows share one capture of every head: {report.capture_seconds_per_query:.3f} s/query (median).")
    if report.ragfocus_over_forward is not None:
        console.print(
            f"Focuser.rank {report.ragfocus_seconds_per_query:.3f} s/query, plain forward (SDPA, no attention) "
            f"{report.forward_seconds_per_query:.3f} s/query; ratio (median over questions) {report.ragfocus_over_forward:.2f}"
        )


def _number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.3f}"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
