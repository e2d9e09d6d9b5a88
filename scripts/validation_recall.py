"""recall@2 and both@4 of a Focuser on HotpotQA validation questions, through ``rank_many``;
optionally records the rankings (the format ``ragfocus bench --check`` compares against).

    .venv/bin/python scripts/validation_recall.py [--start 3000] [--count 400]
        [--distraction on|off|default] [--record PATH] [--record-count 200]

Prints one JSON line. Validation questions only (3000-4999): never tune on what this prints.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ragfocus import Focuser
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.evaluation.rankings import record_rankings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", type=int, default=3000)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--distraction", choices=("on", "off", "default"), default="default")
    parser.add_argument("--record", type=Path, default=None, help="write the rankings of the first --record-count questions here")
    parser.add_argument("--record-count", type=int, default=200)
    args = parser.parse_args()
    if args.start < 3000 or args.start + args.count > 5000:
        parser.error("validation questions are 3000-4999")
    torch.set_num_threads(2)
    focuser = Focuser(device="cpu", distraction={"on": True, "off": False, "default": None}[args.distraction])
    questions = hotpotqa(args.start, args.count)
    started = time.perf_counter()
    recording = record_rankings(focuser, questions, batch_size=args.batch_size, progress=False)
    seconds = time.perf_counter() - started
    recall, both = [], []
    for question, entry in zip(questions, recording["questions"]):
        order = entry["order"]
        recall.append(len(question.gold & set(order[:2])) / len(question.gold))
        both.append(float(question.gold <= set(order[:4])))
    if args.record is not None:
        subset = dict(recording, questions=recording["questions"][: args.record_count])
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(subset) + "\n")
    print(json.dumps({
        "questions": [args.start, args.start + args.count - 1],
        "distraction": focuser.distraction,
        "signals": recording["signals"],
        "recall@2": sum(recall) / len(recall),
        "both@4": sum(both) / len(both),
        "seconds": seconds,
    }))


if __name__ == "__main__":
    main()
