"""GPU: would compiling the model's unfused elementwise work take the default Focuser's
``rank_many`` past 200 queries/s on an H100? SwiGLU (``silu(gate) * up``) and the rotary
embedding under ``torch.compile(dynamic=True)`` (the fourth session's ``fusion_probe.py``: the
bare forward 1.12x), swapped in and out by this probe only (the rotary function is a module
global of transformers, which the library does not patch), against the landed model,
alternating in one process: ``rank_many`` over HotpotQA dev 0-1023 at batch 64, the bare
forward over every prompt it reads, and the share of questions whose top 2 is the same in both.

    python3 scripts/gpu/compile_probe.py [ROUNDS] [QUESTIONS]   # default 3 rounds, 1024 questions
    PROBE_DEVICE=cpu python3 scripts/gpu/compile_probe.py 1 4   # the same code on a CPU (slow)

Prints one JSON line per run. Written 2026-12-07 with no device time left to run it on a GPU:
not run on one yet. On the 2-core CPU machine ``PROBE_DEVICE=cpu ... 1 2`` ran end to end
(warm-up 133 s compiled, 71 s eager; the same top 2 on both questions; its seconds, taken with
the test suite running beside it, say nothing about a GPU).
"""
import json
import os
import sys
import time

import torch
from transformers.models.llama import modeling_llama

from ragfocus import Focuser
from ragfocus.engine.compiled import compile_mlps, restore_mlps
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


eager_rotary = modeling_llama.apply_rotary_pos_emb
compiled_rotary = torch.compile(eager_rotary, dynamic=True)


def landed() -> None:
    restore_mlps(model)
    modeling_llama.apply_rotary_pos_emb = eager_rotary


def mlps() -> None:  # the library's opt-in: load_model(compiled_mlps=True)
    landed()
    assert compile_mlps(model) == model.config.num_hidden_layers, compile_failure_hint


def mlps_and_rotary() -> None:  # probe only: the rotary function is a module global of transformers
    mlps()
    modeling_llama.apply_rotary_pos_emb = compiled_rotary


compile_failure_hint = "compile_mlps replaced no MLP: see the warning above"


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


VARIANTS = (landed, mlps, mlps_and_rotary)
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
        if switch is landed:
            reference = tops
        same = sum(a == b for a, b in zip(tops, reference or tops)) / len(tops)
        print(json.dumps({
            "round": round_number, "variant": switch.__name__,
            "rank_many_seconds": round(rank_seconds, 3), "queries_per_second": round(COUNT / rank_seconds, 1),
            "every_prompt_bare_seconds": round(bare_seconds, 3), "ratio": round(rank_seconds / bare_seconds, 3),
            "same_top2_as_landed": round(same, 4),
        }), flush=True)
landed()
