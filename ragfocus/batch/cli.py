"""The ``ragfocus batch`` and ``ragfocus index`` subcommands (added to the main parser)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ragfocus.batch.summary import EXIT_USAGE
from ragfocus.types import GRANULARITIES, ORDERS


def add_batch_parsers(commands: Any) -> None:
    """Add ``batch`` and ``index`` to the ``ragfocus`` subcommands."""
    batch = commands.add_parser(
        "batch", help="focus every row of a JSONL/Parquet file (resumable; --engine ray for a Ray cluster)",
        description="Focus every row of INPUT into OUTPUT. Exit status: 0 all rows succeeded, 3 some rows failed "
                    "(listed in the errors file), 2 bad arguments, an unreadable input or unwritable output, or an output "
                    "that exists without --resume/--overwrite.",
    )
    batch.add_argument("input", type=Path, help="rows {id, query, passages | corpus[, k][, metadata]} as .jsonl or .parquet")
    batch.add_argument("output", type=Path, help="output .jsonl file, or .parquet directory of part files")
    batch.add_argument("--budget", type=int, default=None, help="token budget of each focused context")
    batch.add_argument("--ratio", type=float, default=None, help="budget as a share of each row's input tokens")
    batch.add_argument("--top-k", type=int, default=None, help="keep at most this many passages")
    batch.add_argument("--threshold", type=float, default=None, help="keep passages scoring at least this")
    batch.add_argument("--order", choices=ORDERS, default="relevance", help="order of the kept passages (default relevance)")
    batch.add_argument("--granularity", choices=GRANULARITIES, default="passage", help="prune whole passages or sentences too")
    batch.add_argument("--model", default=None, help="scorer: Hugging Face id or path (default: embedded SmolLM2-135M)")
    batch.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    batch.add_argument("--distraction", action=argparse.BooleanOptionalAction, default=None,
                       help="add the distraction signal (default off; --distraction about doubles the time on CPU)")
    batch.add_argument("--index", default=None, help="default index directory (ragfocus index) for rows without 'corpus'")
    batch.add_argument("--k", type=int, default=10, help="passages retrieved for rows without 'k' (default 10)")
    batch.add_argument("--batch-size", type=int, default=8,
                       help="rows grouped for retrieval, writing and Ray workers (default 8); each row is still one model call")
    batch.add_argument("--resume", action="store_true", help="skip ids already in OUTPUT (repairs a cut last line)")
    batch.add_argument("--overwrite", action="store_true", help="delete OUTPUT first")
    batch.add_argument("--errors", type=Path, default=None, help="errors file (default OUTPUT's stem + .errors.jsonl)")
    batch.add_argument("--part-rows", type=int, default=100, help="Parquet: rows per part file (default 100)")
    batch.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    batch.add_argument("--engine", choices=("local", "ray"), default="local", help="local (default) or ray (Ray Data)")
    batch.add_argument("--ray-address", default=None, help="ray: cluster address ('auto', ray://host:port); default a local instance")
    batch.add_argument("--workers", type=int, default=1, help="ray: model actors (default 1)")
    batch.add_argument("--cpus-per-worker", type=float, default=1.0, help="ray: CPUs per actor (default 1)")
    batch.add_argument("--gpus-per-worker", type=float, default=None,
                       help="ray: GPUs per actor (default 1 when --device cuda, or no --device and the cluster has GPUs; else 0)")
    batch.set_defaults(run=run_batch_command)

    index = commands.add_parser("index", help="embed a JSONL/Parquet corpus {id, text, ...} into a faiss index for batch")
    index.add_argument("corpus", type=Path, help="corpus rows {id, text[, metadata], ...} as .jsonl or .parquet")
    index.add_argument("index_dir", type=Path, help="directory to write (index.faiss, passages.jsonl, index.json)")
    index.set_defaults(run=run_index_command)


def run_batch_command(args: argparse.Namespace) -> int:
    from ragfocus.batch.local import run_local
    from ragfocus.batch.options import BatchOptions
    from ragfocus.batch.ray_engine import run_ray

    try:
        options = BatchOptions(
            budget=args.budget, ratio=args.ratio, top_k=args.top_k, threshold=args.threshold, order=args.order,
            granularity=args.granularity, model=args.model, device=args.device, distraction=args.distraction,
            index=args.index, k=args.k, batch_size=args.batch_size,
        )
        if not args.input.is_file() and not (args.input.is_dir() and args.input.suffix == ".parquet"):
            raise ValueError(f"no input file {args.input}")
        common = {"resume": args.resume, "overwrite": args.overwrite, "errors": args.errors, "part_rows": args.part_rows,
                  "progress": not args.no_progress}
        if args.engine == "ray":
            summary = run_ray(args.input, args.output, options, address=args.ray_address, workers=args.workers,
                              cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker, **common)
        else:
            summary = run_local(args.input, args.output, options, **common)
    except (ValueError, TypeError, OSError, ImportError) as error:
        print(f"ragfocus batch: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(summary.describe(), file=sys.stderr)
    return summary.exit_code


def run_index_command(args: argparse.Namespace) -> int:
    from ragfocus.batch.index import build_index

    try:
        info = build_index(args.corpus, args.index_dir)
    except (ValueError, OSError, ImportError) as error:
        print(f"ragfocus index: {error}", file=sys.stderr)
        return EXIT_USAGE
    skipped = f" ({info.skipped} rows without id/text skipped)" if info.skipped else ""
    print(f"indexed {info.passages} passages ({info.dimension}-d all-MiniLM-L6-v2) into {info.directory}{skipped}", file=sys.stderr)
    return 0
