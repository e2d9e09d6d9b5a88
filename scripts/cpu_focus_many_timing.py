"""CPU: ``focus_many`` (``budget=300`` and ``ratio=0.3``) against ``rank_many`` on the same
validation questions, alternating in one process (after a warm-up); prints one JSON line with
each run's seconds, the medians and the ratios, and checks that no budget is exceeded.

    .venv/bin/python scripts/cpu_focus_many_timing.py [--start 3000] [--count 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ragfocus import Focuser
from ragfocus.evaluation.datasets import hotpotqa


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", type=int, default=3000)
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    focuser = Focuser(device="cpu")
    requests = [(q.question, q.paragraphs) for q in hotpotqa(args.start, args.count)]
    focuser.rank_many(requests[:2], batch_size=args.batch_size)  # warm-up
    runs: dict[str, list[float]] = {"rank_many": [], "focus_many_budget_300": [], "focus_many_ratio_0.3": []}
    calls = {
        "rank_many": lambda: focuser.rank_many(requests, batch_size=args.batch_size),
        "focus_many_budget_300": lambda: focuser.focus_many(requests, budget=300, batch_size=args.batch_size),
        "focus_many_ratio_0.3": lambda: focuser.focus_many(requests, ratio=0.3, batch_size=args.batch_size),
    }
    over = 0
    for _ in range(args.repeat):
        for name, call in calls.items():
            started = time.perf_counter()
            results = call()
            runs[name].append(time.perf_counter() - started)
            if name != "rank_many":
                over += sum(1 for result in results if result.budget is not None and result.tokens_out > result.budget)
    medians = {name: statistics.median(seconds) for name, seconds in runs.items()}
    print(json.dumps({
        "questions": [args.start, args.start + args.count - 1],
        "runs": runs,
        "medians": medians,
        "ratios_to_rank_many": {name: medians[name] / medians["rank_many"] for name in medians},
        "budgets_exceeded": over,
    }))


if __name__ == "__main__":
    main()
