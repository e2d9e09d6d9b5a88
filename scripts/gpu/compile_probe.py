"""GPU: ``Focuser.rank_many`` with SwiGLU and the rotary embedding under ``torch.compile``
(``ragfocus.engine.compiled``, the CUDA default since the ninth session) against the same model
eager (``restore_elementwise``), alternating in one process: ``rank_many`` over HotpotQA dev
0-1023 at batch 64, the bare forward over every prompt it reads, and the share of questions
whose top 2 is the same in both.

    python3 scripts/gpu/compile_probe.py [ROUNDS] [QUESTIONS]   # default 3 rounds, 1024 questions
    PROBE_DEVICE=cpu python3 scripts/gpu/compile_probe.py 1 4   # the same code on a CPU (slow)

Prints one JSON line per run. Its first version (2026-12-07, ninth session, on an H100;
``docs/results/compile-probe-2026-12-07-h100.txt``) had three variants: the eager model,
SwiGLU alone compiled, and SwiGLU plus the rotary embedding (then swapped in by patching
transformers' global): ``rank_many`` 5.04 / 4.93 / 4.22 s, bare forward 4.76 / 5.02 / 4.37 s
(medians of 3). This version (eager against compiled), on one H100 in the same session
(``compile-probe-2026-12-07-h100-b.txt``, ``-c.txt``): 3 rounds, ``rank_many`` medians 4.91
against 4.94 s (the compiled run of round 3 slow at 5.34 s); 5 rounds, **5.11 against 4.24 s
(1.21x)**, the compiled run faster in every round; the bare forward over every prompt 4.74
against 4.36 s (1.09x) in every round; top 2 the same on 99.61% of the 1,024 questions.
"""
import json
import os
import sys
import time

import torch

from ragfocus import Focuser
from ragfocus.engine.compiled import compile_elementwise, restore_elementwise
from ragfocus.evaluation.bench import bare_forward, packed_forward
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.prompt import build_prompt
from ragfocus.scoring.distraction import tokenize_distraction

DEVICE = os.environ.get("PROBE_DEVICE", "cuda")
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
COUNT = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
BATCH = 64

focuser = Focuser(device=DEVICE)
model = focuser.loaded.model
requests = [(q.question, q.paragraphs) for q in hotpotqa(0, COUNT)]
ranking_ids = [p.prefix_ids + p.query_ids for p in (build_prompt(focuser.loaded.tokenizer, q, ps) for q, ps in requests)]
distraction_ids = tokenize_distraction(focuser.loaded.tokenizer, requests).sequences if focuser.distraction else []
if focuser.preparation is not None:
    focuser.preparation.wait_ready(120)


def eager() -> None:
    restore_elementwise(model)


def compiled() -> None:  # the library's CUDA default: load_model(compiled_elementwise=None)
    eager()
    assert compile_elementwise(model) == 2 * model.config.num_hidden_layers, "see the warning above"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def every_prompt() -> None:
    with torch.inference_mode():
        bare_forward(model, ranking_ids, batch_size=BATCH)
        if distraction_ids:
            packed_forward(model, distraction_ids)


def timed(work):
    sync()
    started = time.perf_counter()
    result = work()
    sync()
    return time.perf_counter() - started, result


def top2(rankings) -> list[tuple[int, ...]]:
    return [tuple(sorted(p.index for p in ranked[:2])) for ranked in rankings]


VARIANTS = (eager, compiled)
for switch in VARIANTS:  # warm-up: compiles every shape class once
    started = time.perf_counter()
    switch()
    focuser.rank_many(requests[: min(COUNT, 2 * BATCH)], batch_size=BATCH)
    every_prompt()
    print(json.dumps({"warm_up": switch.__name__, "seconds": round(time.perf_counter() - started, 1)}), flush=True)

reference: list[tuple[int, ...]] | None = None
for round_number in range(1, ROUNDS + 1):
    for switch in VARIANTS:
        switch()
        bare_seconds, _ = timed(every_prompt)
        rank_seconds, rankings = timed(lambda: focuser.rank_many(requests, batch_size=BATCH))
        tops = top2(rankings)
        if switch is eager:
            reference = tops
        same = sum(a == b for a, b in zip(tops, reference or tops)) / len(tops)
        print(json.dumps({
            "round": round_number, "variant": switch.__name__,
            "rank_many_seconds": round(rank_seconds, 3), "queries_per_second": round(COUNT / rank_seconds, 1),
            "every_prompt_bare_seconds": round(bare_seconds, 3), "ratio": round(rank_seconds / bare_seconds, 3),
            "same_top2_as_eager": round(same, 4),
        }), flush=True)
