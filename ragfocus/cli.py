"""The ``ragfocus`` command: ``demo`` and ``eval hotpotqa``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # weight-loading bars would bury the output
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    return int(args.run(args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragfocus", description="Rank, prune and reorder retrieved passages with a small LM's attention.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and timings")
    commands = parser.add_subparsers(metavar="COMMAND")

    demo = commands.add_parser("demo", help="retrieve over HotpotQA paragraphs, focus, and show what was kept")
    demo.add_argument("--questions", type=int, default=3, help="questions to run (from HotpotQA dev 0-2999)")
    demo.add_argument("--corpus-questions", type=int, default=40, help="index the paragraphs of this many dev questions")
    demo.add_argument("--k", type=int, default=8, help="passages retrieved per question")
    demo.add_argument("--budget", type=int, default=250, help="token budget of the focused context")
    demo.add_argument("--model", default=None, help="scorer: Hugging Face id or path (default: embedded SmolLM2-135M)")
    demo.set_defaults(run=_run_demo)

    evaluate = commands.add_parser("eval", help="benchmarks")
    suites = evaluate.add_subparsers(metavar="SUITE")
    hotpot = suites.add_parser("hotpotqa", help="passage ranking on HotpotQA dev-distractor")
    hotpot.add_argument("--start", type=int, default=3000, help="first question (3000-4999 is the validation split)")
    hotpot.add_argument("--limit", type=int, default=200, help="number of questions")
    hotpot.add_argument("--model", default=None, help="scorer: Hugging Face id or path (default: embedded SmolLM2-135M)")
    hotpot.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    hotpot.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    hotpot.set_defaults(run=_run_eval_hotpotqa)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ragfocus import Focuser
    from ragfocus.evaluation.demo import run_demo
    from ragfocus.evaluation.render import render_demo

    console = Console()
    if not console.is_terminal:  # a pipe or a log: wide enough for the tables
        console = Console(width=120)
    with console.status("loading the scorer model"):
        focuser = Focuser(args.model)
    with console.status("indexing paragraphs and focusing"):
        size, seconds, cases = run_demo(focuser, corpus_questions=args.corpus_questions, questions=args.questions, k=args.k, budget=args.budget)
    render_demo(console, focuser.loaded.name, size, seconds, cases)
    return 0


def _run_eval_hotpotqa(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ragfocus import Focuser
    from ragfocus.evaluation.hotpotqa_eval import evaluate_hotpotqa
    from ragfocus.evaluation.render import render_eval

    focuser = Focuser(args.model)
    report = evaluate_hotpotqa(focuser, start=args.start, limit=args.limit, progress=not args.no_progress)
    render_eval(Console(), report)
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
