"""CPU: the default Focuser's ``rank``, one query at a time, against one plain forward pass of
the same model over the same prompt (``ragfocus.evaluation.bench.bare_forward``: SDPA, no
attention output, no LM head), alternating in one process, on validation questions.

    .venv/bin/python scripts/cpu_rank_vs_forward.py TAG [--start 3000] [--count 30] [--distraction on|off|default]

Prints one JSON line: per question the two times and their ratio; the median ratio, the ratio
of the medians, and each question's top 2 (to compare code versions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ragfocus import Focuser
from ragfocus.evaluation.bench import bare_forward
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.prompt import build_prompt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tag")
    parser.add_argument("--start", type=int, default=3000)
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--distraction", choices=("on", "off", "default"), default="default")
    args = parser.parse_args()
    torch.set_num_threads(2)
    distraction = {"on": True, "off": False, "default": None}[args.distraction]
    focuser = Focuser(device="cpu", distraction=distraction)
    model = focuser.loaded.model
    questions = hotpotqa(args.start, args.count)
    prompts = [build_prompt(focuser.loaded.tokenizer, q.question, q.paragraphs) for q in questions]
    focuser.rank(questions[0].question, questions[0].paragraphs)  # warm-up
    bare_forward(model, [prompts[0].prefix_ids + prompts[0].query_ids], batch_size=1)
    rank_times, forward_times, tops = [], [], []
    for question, prompt in zip(questions, prompts):
        started = time.perf_counter()
        bare_forward(model, [prompt.prefix_ids + prompt.query_ids], batch_size=1)
        forward_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        ranked = focuser.rank(question.question, question.paragraphs)
        rank_times.append(time.perf_counter() - started)
        tops.append([p.index for p in ranked[:2]])
    ratios = [r / f for r, f in zip(rank_times, forward_times)]
    print(json.dumps({
        "tag": args.tag,
        "distraction": focuser.distraction,
        "questions": [args.start, args.start + args.count - 1],
        "median_ratio": statistics.median(ratios),
        "ratio_of_medians": statistics.median(rank_times) / statistics.median(forward_times),
        "median_rank_s": statistics.median(rank_times),
        "median_forward_s": statistics.median(forward_times),
        "rank_s": rank_times,
        "forward_s": forward_times,
        "top2": tops,
    }))


if __name__ == "__main__":
    main()
