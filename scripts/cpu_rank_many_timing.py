"""CPU: the default Focuser's rank_many over validation questions 3000-3015 (batch 8, after a
warm-up batch); prints one JSON line: seconds and each question's top 2.

    .venv/bin/python scripts/cpu_rank_many_timing.py TAG [--packed-capture] [--distraction on|off]

``--packed-capture`` runs the capture as one packed row (``suffix_attention_batch(packed=True)``,
the CUDA default) instead of the CPU's default two passes.

Run code versions alternately on one machine to compare them (docs/benchmarks.md).
"""
import functools
import json
import sys
import time

import torch

from ragfocus import Focuser
from ragfocus.evaluation.datasets import hotpotqa

torch.set_num_threads(2)
requests = [(q.question, q.paragraphs) for q in hotpotqa(3000, 16)]
distraction = None
if "--distraction" in sys.argv:
    distraction = {"on": True, "off": False}[sys.argv[sys.argv.index("--distraction") + 1]]
focuser = Focuser(device="cpu", distraction=distraction)
if "--packed-capture" in sys.argv[2:]:
    focuser.engine.suffix_attention_batch = functools.partial(focuser.engine.suffix_attention_batch, packed=True)  # type: ignore[method-assign]
focuser.rank_many(requests[:2], batch_size=8)  # warm-up
started = time.perf_counter()
ranked = focuser.rank_many(requests, batch_size=8)
seconds = time.perf_counter() - started
print(json.dumps({"tag": sys.argv[1], "distraction": focuser.distraction, "seconds": seconds, "top2": [[p.index for p in r[:2]] for r in ranked]}))
