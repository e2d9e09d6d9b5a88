"""``Focuser.rank_many`` with Python's garbage collector paused (``pause_gc``, the CUDA default)
against running, alternating in one process: the default Focuser over HotpotQA dev 0-1023 at
batch 64, as ``ragfocus bench`` runs it.

    python3 scripts/gpu/gc_pause_probe.py [ROUNDS]     # default 3 rounds of (running, paused)

Prints one JSON line per run: the setting, seconds, q/s, the device worker's seconds, and the
collections the process made during the run (count and seconds per generation, any thread).
"""
import gc
import json
import sys
import time

import torch

from ragfocus import Focuser
from ragfocus.evaluation.datasets import hotpotqa

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
focuser = Focuser(device="cuda")
requests = [(q.question, q.paragraphs) for q in hotpotqa(0, 1024)]
if focuser.preparation is not None:
    focuser.preparation.wait_ready(120)
focuser.rank_many(requests[:64], batch_size=64)  # warm-up

collections: dict[int, list[float]] = {0: [], 1: [], 2: []}
began: list[float] = []


def timed_collection(phase: str, info: dict) -> None:
    if phase == "start":
        began.append(time.perf_counter())
    elif began:
        collections[info["generation"]].append(time.perf_counter() - began.pop())


gc.callbacks.append(timed_collection)
for round_number in range(1, ROUNDS + 1):
    for paused in (False, True):
        focuser.pause_gc = paused
        for seconds in collections.values():
            seconds.clear()
        torch.cuda.synchronize()
        started = time.perf_counter()
        focuser.rank_many(requests, batch_size=64)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        split = focuser.last_batch_seconds
        print(json.dumps({
            "round": round_number, "pause_gc": paused, "seconds": round(elapsed, 3),
            "queries_per_second": round(len(requests) / elapsed, 1),
            "device_seconds": round(split["device"], 3), "wait_seconds": round(split["wait"], 3),
            "collections": {str(g): [len(s), round(sum(s), 3)] for g, s in collections.items()},
        }), flush=True)
