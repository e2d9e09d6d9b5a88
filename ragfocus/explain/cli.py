"""The ``ragfocus focus`` and ``ragfocus explain`` commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ragfocus.types import GRANULARITIES, ORDERS


def add_explain_parsers(commands: Any) -> None:
    """Add ``focus`` and ``explain`` to the ``ragfocus`` command's subparsers."""
    focus = commands.add_parser("focus", help="focus passages from a file; print the context (--show: why)")
    focus.add_argument("query", help="the question or search query")
    focus.add_argument("--passages", type=Path, required=True, metavar="FILE",
                       help="passages: .json (list of strings or {text, id, metadata, score}), .jsonl, or text "
                            "separated by blank lines")
    focus.add_argument("--show", action="store_true", help="also show kept and dropped passages with scores and signals (on stderr)")
    _focus_options(focus)
    focus.set_defaults(run=run_focus)

    explain = commands.add_parser("explain", help="HTML report of why passages were kept (one query, or --batch summary)")
    explain.add_argument("query", nargs="?", help="the question or search query (not with --batch)")
    explain.add_argument("--passages", type=Path, metavar="FILE", help="passages, as for ragfocus focus")
    explain.add_argument("--batch", type=Path, metavar="FILE.jsonl",
                         help="summarize a batch output file (rows: id, query, tokens_in, tokens_out, kept, dropped)")
    explain.add_argument("-o", "--output", type=Path, default=None,
                         help="HTML file to write (default explain.html, or summary.html with --batch)")
    _focus_options(explain)
    explain.set_defaults(run=run_explain)


def _focus_options(parser: argparse.ArgumentParser) -> None:
    limits = parser.add_mutually_exclusive_group()
    limits.add_argument("--budget", type=int, default=None, help="most tokens in the context")
    limits.add_argument("--ratio", type=float, default=None, help="budget as a share of the input's tokens (0-1)")
    parser.add_argument("--top-k", type=int, default=None, help="keep at most this many passages")
    parser.add_argument("--threshold", type=float, default=None, help="keep passages scoring at least this")
    parser.add_argument("--order", choices=ORDERS, default="relevance", help="order of the kept passages")
    parser.add_argument("--granularity", choices=GRANULARITIES, default="passage", help="prune whole passages or sentences")
    parser.add_argument("--model", default=None, help="scorer: Hugging Face id or path (default: embedded SmolLM2-135M)")
    parser.add_argument("--distraction", action=argparse.BooleanOptionalAction, default=False,
                        help="add the distraction pass (default off: about half the time on a CPU)")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {"budget": args.budget, "ratio": args.ratio, "top_k": args.top_k, "threshold": args.threshold,
            "order": args.order, "granularity": args.granularity}


def _focuser(args: argparse.Namespace) -> Any:
    from ragfocus import Focuser

    return Focuser(args.model, distraction=args.distraction)


def _passages(path: Path) -> list:
    from ragfocus.passage_files import read_passages

    if not path.is_file():
        raise SystemExit(f"ragfocus: no passages file {str(path)!r}")
    try:
        return read_passages(path)
    except ValueError as error:
        raise SystemExit(f"ragfocus: {error}") from None


def run_focus(args: argparse.Namespace) -> int:
    """Print the focused context to stdout; with ``--show`` the table goes to stderr, so the
    context can be piped on its own."""
    result = _focuser(args).focus(args.query, _passages(args.passages), **_options(args))
    if args.show:
        from rich.console import Console

        console = Console(stderr=True)
        if not console.is_terminal:
            console = Console(stderr=True, width=160)
        console.print(result.explain())
    sys.stdout.write(result.context + ("\n" if result.context else ""))
    return 0


def run_explain(args: argparse.Namespace) -> int:
    """Write the HTML report of one query, or the summary page of a batch file."""
    if args.batch is not None:
        if args.query is not None or args.passages is not None:
            raise SystemExit("ragfocus explain: give either --batch FILE.jsonl or QUERY --passages FILE, not both")
        from ragfocus.explain.batch import read_batch, render_batch_html

        if not args.batch.is_file():
            raise SystemExit(f"ragfocus: no batch file {str(args.batch)!r}")
        try:
            page = render_batch_html(read_batch(args.batch), source=args.batch.name)
        except ValueError as error:
            raise SystemExit(f"ragfocus: {error}") from None
        target = args.output or Path("summary.html")
    else:
        if args.query is None or args.passages is None:
            raise SystemExit("ragfocus explain: give QUERY --passages FILE (or --batch FILE.jsonl)")
        from ragfocus.explain import explain

        page = explain(_focuser(args), args.query, _passages(args.passages), **_options(args)).to_html()
        target = args.output or Path("explain.html")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    print(f"wrote {target}")
    return 0
