"""CPU: the default Focuser's rank, one query at a time, on validation questions 3000-3009
(after one warm-up query); prints one JSON line: seconds per query, their median and mean, and
each question's top 2.

    .venv/bin/python scripts/cpu_rank_timing.py TAG

Run code versions alternately on one machine to compare them (docs/benchmarks.md).
"""
import json
import statistics
import sys
import time

import torch

from ragfocus import Focuser
from ragfocus.evaluation.datasets import hotpotqa

torch.set_num_threads(2)
qs = hotpotqa(3000, 10)
f = Focuser(device="cpu")
f.rank(qs[0].question, qs[0].paragraphs)  # warm-up
times, tops = [], []
for q in qs:
    started = time.perf_counter()
    ranked = f.rank(q.question, q.paragraphs)
    times.append(time.perf_counter() - started)
    tops.append([p.index for p in ranked[:2]])
print(json.dumps({"tag": sys.argv[1], "median": statistics.median(times), "mean": statistics.mean(times), "times": times, "top2": tops}))
