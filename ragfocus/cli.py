"""The ``ragfocus`` command: ``demo``, ``focus``, ``explain``, ``batch``, ``index``, ``eval hotpotqa|report|squad|pooled`` and ``heads detect|show|plot``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ragfocus.batch.cli import add_batch_parsers
from ragfocus.evaluation.pooled_eval import add_pooled_parser
from ragfocus.evaluation.squad_eval import add_squad_parser
from ragfocus.explain.cli import add_explain_parsers


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
    add_explain_parsers(commands)

    bench = commands.add_parser("bench", help="queries/s of Focuser.rank against a bare forward pass (GPU or CPU)")
    bench.add_argument("--model", default=None, help="scorer: Hugging Face id or path (default: embedded SmolLM2-135M)")
    bench.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    bench.add_argument("--dtype", choices=("auto", "bfloat16", "float16", "float32"), default="auto",
                       help="weights' dtype (auto: float32 on CPU; on CUDA float16 for the embedded default, bfloat16 "
                            "for other models, whose float16 range is unknown: docs/gpu.md)")
    bench.add_argument("--batch-size", type=int, default=64, help="prompts per batched forward pass")
    bench.add_argument("--start", type=int, default=0, help="first HotpotQA dev question (0-2999 is the development split)")
    bench.add_argument("--questions", type=int, default=512, help="questions to time")
    bench.add_argument("--distraction", action=argparse.BooleanOptionalAction, default=False,
                       help="add the distraction pass (default off; --no-distraction is accepted)")
    bench.add_argument("--no-fused-norms", action="store_true",
                       help="keep transformers' own RMSNorms on CUDA (default: one rms_norm kernel each, ragfocus.engine.fused)")
    bench.add_argument("--no-compile", action="store_true",
                       help="keep SwiGLU and the rotary embedding eager on CUDA (default: under torch.compile, "
                            "ragfocus.engine.compiled)")
    bench.add_argument("--repeat", type=int, default=1, metavar="N",
                       help="run the bare forward and rank_many N times, alternating, and report the median of each")
    bench.add_argument("--single", type=int, default=0, metavar="N", help="also time Focuser.rank one query at a time on N questions")
    bench.add_argument("--peer", type=int, default=0, metavar="N", help="also time LongLLMLingua's ranking on N questions")
    bench.add_argument("--focus-budget", type=int, default=None, metavar="N",
                       help="also time focus_many(budget=N) after each rank_many run, on the same questions")
    bench.add_argument("--check", type=Path, default=None, metavar="REF.json",
                       help="rank the questions of a recording (ragfocus.evaluation.rankings) and compare: same top 2, score differences")
    bench.add_argument("--record", type=Path, default=None, metavar="PATH",
                       help="write this run's rankings (of --check's questions, else of --record-start/--record-count) here")
    bench.add_argument("--record-start", type=int, default=3000, help="first question recorded without --check (default 3000)")
    bench.add_argument("--record-count", type=int, default=200, help="questions recorded without --check (default 200)")
    bench.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    bench.set_defaults(run=_run_bench)

    evaluate = commands.add_parser("eval", help="benchmarks")
    suites = evaluate.add_subparsers(metavar="SUITE")
    hotpot = suites.add_parser("hotpotqa", help="passage ranking on HotpotQA dev-distractor")
    hotpot.add_argument("--start", type=int, default=3000, help="first question (3000-4999 is the validation split)")
    hotpot.add_argument("--limit", type=int, default=200, help="number of questions")
    hotpot.add_argument("--model", default=None, help="scorer: Hugging Face id or path (default: embedded SmolLM2-135M)")
    hotpot.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    hotpot.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    hotpot.add_argument("--profile", action="append", default=None, metavar="PATH",
                        help="head profile whose top-k heads get rows (repeatable; default: the bundled profiles of the model)")
    hotpot.add_argument("--top-k", type=_int_list, default=(4, 8, 16), help="comma-separated k for the profile rows (default 4,8,16)")
    hotpot.add_argument("--timing", action="store_true",
                        help="also time Focuser.rank against one plain forward pass per question (slower)")
    hotpot.add_argument("--dump", type=Path, default=None, help="write one JSONL record per question (all scores and signals)")
    hotpot.add_argument("--fusion", default=None, help="fusion profile JSON for the default row (default: the bundled one)")
    hotpot.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    hotpot.add_argument("--sort-rounds", type=int, default=None,
                        help="attention-sort rounds (default: the fusion profile's, at least 1 so the row exists)")
    hotpot.add_argument("--no-head-rows", action="store_true", help="skip the all-heads capture and its head rows")
    hotpot.add_argument("--no-peers", action="store_true", help="skip LongLLMLingua")
    hotpot.add_argument("--no-report", action="store_true", help="only write --dump (report later with eval report)")
    hotpot.add_argument("--no-sentences", action="store_true", help="skip the sentence-level answer survival row")
    hotpot.set_defaults(run=_run_eval_hotpotqa)
    merge = suites.add_parser("report", help="rebuild a HotpotQA report from --dump files (merges runs over parts of a range)")
    merge.add_argument("dumps", nargs="+", type=Path, help="JSONL files written by eval hotpotqa --dump")
    merge.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    merge.add_argument("--plot", type=Path, default=None, help="write the budget curve (PNG) here")
    merge.set_defaults(run=_run_eval_report)
    add_squad_parser(suites)
    add_pooled_parser(suites, _run_eval_pooled)

    add_batch_parsers(commands)

    heads = commands.add_parser("heads", help="retrieval-head profiles: detect, show, plot")
    head_commands = heads.add_subparsers(metavar="ACTION")
    detect = head_commands.add_parser("detect", help="score every head of a model and write a profile")
    detect.add_argument("--method", choices=("qr", "niah"), required=True,
                        help="qr: calibrated query attention on gold HotpotQA passages (QRHead); "
                             "niah: copy-paste retrieval score on needle-in-a-haystack (Wu et al.)")
    detect.add_argument("--output", type=Path, required=True, help="profile JSON to write")
    detect.add_argument("--model", default=None, help="Hugging Face id or path (default: embedded SmolLM2-135M)")
    detect.add_argument("--top-k", type=int, default=8, help="heads to select (default 8)")
    detect.add_argument("--work-file", type=Path, default=None,
                        help="per-item results, for resuming (default: OUTPUT with .work.jsonl)")
    detect.add_argument("--start", type=int, default=0, help="qr: first HotpotQA dev question (development split 0-2999)")
    detect.add_argument("--limit", type=int, default=300, help="qr: number of questions (default 300)")
    detect.add_argument("--criterion", choices=("recall", "mass"), default="recall",
                        help="qr: rank heads by their own recall@2 (default) or by QRHead's gold attention mass")
    detect.add_argument("--lengths", type=_int_list, default=None, help="niah: haystack lengths in tokens (default 512,1024,2048,4096)")
    detect.add_argument("--depths", type=_float_list, default=None, help="niah: needle depths 0-1 (default 0,0.2,...,1)")
    detect.add_argument("--needles", type=int, default=None, help="niah: how many of the built-in needles (default all 3)")
    detect.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    detect.set_defaults(run=_run_heads_detect)

    show = head_commands.add_parser("show", help="print a profile's identity and best heads")
    show.add_argument("profile", help="profile JSON path, or the name of a bundled profile")
    show.add_argument("--top", type=int, default=10, help="heads to list")
    show.set_defaults(run=_run_heads_show)

    plot = head_commands.add_parser("plot", help="layer x head heat maps of profiles (PNG)")
    plot.add_argument("profiles", nargs="*", help="profile paths or bundled names (default: the bundled qr and niah profiles)")
    plot.add_argument("--output", type=Path, required=True, help="PNG to write")
    plot.add_argument("--k", type=int, default=8, help="outline the top k heads of each")
    plot.set_defaults(run=_run_heads_plot)
    return parser


def _number_list(text: str, kind: type, what: str) -> tuple:
    try:
        values = tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


def _int_list(text: str) -> tuple[int, ...]:
    return _number_list(text, int, "integers")


def _float_list(text: str) -> tuple[float, ...]:
    return _number_list(text, float, "numbers")


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

    from ragfocus import Focuser
    from ragfocus.evaluation.hotpotqa_eval import evaluate_hotpotqa
    from ragfocus.evaluation.render import render_eval
    from ragfocus.fusion import choose_fusion
    from ragfocus.models import load_model

    loaded = load_model(args.model, device=args.device)
    fusion = choose_fusion(loaded, args.fusion)
    # Every signal is computed so each gets its row, whatever the fusion profile weights.
    rounds = args.sort_rounds if args.sort_rounds is not None else max(1, fusion.sort_rounds)
    focuser = Focuser(loaded, fusion=fusion, distraction=True, sort_rounds=rounds)
    if args.profile:
        profiles = [_profile(name) for name in args.profile]
    else:
        profiles = _bundled_profiles_for(focuser.loaded)
    report = evaluate_hotpotqa(
        focuser, start=args.start, limit=args.limit, profiles=profiles, top_ks=args.top_k,
        progress=not args.no_progress, timing=args.timing, dump=args.dump, head_rows_on=not args.no_head_rows,
        peers=not args.no_peers, sentences=not args.no_sentences, report=not args.no_report,
    )
    if report is None:
        print(f"wrote {args.dump}; report: ragfocus eval report {args.dump}")
        return 0
    render_eval(_console(), report)
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0


def _run_eval_report(args: argparse.Namespace) -> int:
    from ragfocus.evaluation.hotpotqa_eval import load_records, report_from_records
    from ragfocus.evaluation.render import render_eval
    from ragfocus.models import load_model

    records = load_records(args.dumps)
    loaded = load_model(None)
    report = report_from_records(records, tokenizer=loaded.tokenizer, model=loaded.name)
    render_eval(_console(), report)
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if args.plot:
        from ragfocus.evaluation.plots import plot_budget_curve

        plot_budget_curve(report, args.plot)
    return 0


def _console():
    """A rich console; in a pipe or a log, wide enough that table rows do not wrap."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _profile(name: str):
    from ragfocus.head_profile import HeadProfile, bundled_profile, bundled_profile_names

    if name in bundled_profile_names():
        return bundled_profile(name)
    if not Path(name).is_file():
        raise SystemExit(f"ragfocus: no profile file {name!r} (bundled: {', '.join(bundled_profile_names())})")
    return HeadProfile.load(name)


def _bundled_profiles_for(loaded):
    from ragfocus.head_profile import ModelIdentity, bundled_profile, bundled_profile_names

    profiles = [bundled_profile(name) for name in bundled_profile_names()]
    mine = [profile for profile in profiles if profile.model == ModelIdentity.of(loaded)]
    return sorted(mine, key=lambda profile: profile.method != "qr")  # the default method's rows first


def _run_heads_detect(args: argparse.Namespace) -> int:

    from ragfocus.detection import detect_heads
    from ragfocus.detection import niah as niah_method
    from ragfocus.models import load_model

    loaded = load_model(args.model)
    work_file = args.work_file or args.output.with_name(args.output.name.removesuffix(".json") + ".work.jsonl")
    options: dict = {}
    if args.method == "qr":
        options = {"start": args.start, "limit": args.limit, "criterion": args.criterion}
    else:
        options = {
            "lengths": args.lengths or niah_method.DEFAULT_LENGTHS,
            "depths": args.depths or niah_method.DEFAULT_DEPTHS,
            "needles": args.needles or len(niah_method.NEEDLES),
        }
    profile = detect_heads(loaded, args.method, top_k=args.top_k, work_file=work_file, progress=not args.no_progress, **options)
    profile.save(args.output)
    console = _console()
    _print_profile(console, profile, top=args.top_k)
    console.print(f"profile written to {args.output} (per-item results kept in {work_file} for resuming)")
    return 0


def _run_heads_show(args: argparse.Namespace) -> int:

    _print_profile(_console(), _profile(args.profile), top=args.top)
    return 0


def _run_heads_plot(args: argparse.Namespace) -> int:
    from ragfocus.detection.plot import plot_profiles

    names = args.profiles or ["smollm2-135m-instruct.qr.json", "smollm2-135m-instruct.niah.json"]
    target = plot_profiles([_profile(name) for name in names], args.output, k=args.k)
    print(f"wrote {target}")
    return 0


def _print_profile(console, profile, *, top: int) -> None:
    from rich.table import Table

    model = profile.model
    console.print(f"[bold]{profile.method}[/] head profile for {model.name} ({model.num_layers} layers x {model.num_heads} heads, "
                  f"weights sha256 {(model.weights_sha256 or 'unknown')[:16]}), created {profile.created}")
    console.print(f"data: {profile.data}\nparameters: {profile.parameters}")
    table = Table(title=f"best {top} heads (selected: {len(profile.selected)})")
    for column in ("rank", "layer", "head", "score", "selected"):
        table.add_column(column)
    selected = set(profile.selected)
    for rank, (layer, head) in enumerate(profile.ranked()[:top], start=1):
        table.add_row(str(rank), str(layer), str(head), f"{profile.scores[layer][head]:.4f}", "yes" if (layer, head) in selected else "")
    console.print(table)


def _run_eval_pooled(args: argparse.Namespace) -> int:
    from ragfocus.evaluation.datasets import hotpotqa
    from ragfocus.evaluation.pooled_eval import evaluate_pooled, render_pooled
    from ragfocus.focuser import Focuser

    options = {} if args.final_round is None else {"final_round": args.final_round}
    focuser = Focuser(
        args.model, device=args.device, distraction=args.distraction,
        window_tokens=args.window_tokens, **options,
    )
    questions = hotpotqa(args.start, args.questions)
    report = evaluate_pooled(focuser, questions, k=args.k, minilm=not args.no_minilm, progress=not args.no_progress)
    report.extra["command"] = " ".join(sys.argv)
    print(render_pooled(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    import torch

    from ragfocus.evaluation.bench import render_bench, run_bench
    from ragfocus.evaluation.datasets import hotpotqa
    from ragfocus.evaluation.rankings import compare_rankings, record_rankings
    from ragfocus.focuser import Focuser
    from ragfocus.models import load_model

    dtype = {"auto": None, "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    loaded = load_model(args.model, device=args.device, dtype=dtype, fused_norms=False if args.no_fused_norms else None,
                        compiled_elementwise=False if args.no_compile else None)
    focuser = Focuser(loaded, distraction=args.distraction)
    report = run_bench(
        focuser, hotpotqa(args.start, args.questions), batch_size=args.batch_size,
        single_questions=args.single, peer_questions=args.peer, repeat=args.repeat, focus_budget=args.focus_budget,
        progress=lambda message: print(message, file=sys.stderr),
    )
    report.extra["command"] = " ".join(["ragfocus", *sys.argv[1:]])
    print(render_bench(report))
    recording = None
    if args.check is not None:
        reference = json.loads(args.check.read_text())
        indices = [entry["index"] for entry in reference["questions"]]
        questions = hotpotqa(min(indices), max(indices) - min(indices) + 1)
        wanted = set(indices)
        recording = record_rankings(focuser, [q for q in questions if q.index in wanted], batch_size=args.batch_size, progress=False)
    elif args.record is not None:
        recording = record_rankings(focuser, hotpotqa(args.record_start, args.record_count), batch_size=args.batch_size, progress=False)
    if recording is not None and args.record is not None:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(recording) + "\n")
    if args.check is not None:
        assert recording is not None
        agreement = compare_rankings(reference, recording)
        report.extra["check"] = {"reference": str(args.check), "reference_device": reference.get("device"),
                                 "reference_dtype": reference.get("dtype"), **agreement.as_dict()}
        print(
            f"against {args.check} ({reference.get('device')}, {reference.get('dtype')}): same top 2 on "
            f"{agreement.same_top2:.1%} of {agreement.questions} questions (top 1 {agreement.same_top1:.1%}); "
            f"fused scores differ by {agreement.mean_score_difference:.4f} on average, {agreement.max_score_difference:.4f} at most "
            f"(mean |score| {agreement.score_scale:.3f}); differing: {agreement.differing}"
        )
        if agreement.signals_not_shared:
            print(
                f"  not like for like: {', '.join(agreement.signals_not_shared)} fused in only one of the two "
                "(record the reference with the same Focuser settings, distraction included)"
            )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
