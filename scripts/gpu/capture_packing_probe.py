"""GPU: the capture as one packed row (``suffix_attention_batch(packed=True)``, the CUDA default
since 2026-11-25) against the two passes over a padded cache (``packed=False``), dev 0-511
length-sorted in batches of 64, the default Focuser's three suffixes and heads read: the largest
difference, wall time (alternating, three rounds) and peak memory.

    python3 scripts/gpu/capture_packing_probe.py
"""
import time

import torch

from ragfocus import Focuser
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.passages import as_passages
from ragfocus.prompt import build_prompt

f = Focuser(device="cuda", distraction=False)
tok = f.loaded.tokenizer
inputs = [(q.question, [p.text for p in as_passages(q.paragraphs)]) for q in hotpotqa(0, 512)]
prompts = [build_prompt(tok, q, ps) for q, ps in inputs]
prompts.sort(key=lambda p: -len(p.prefix_ids))
batches = [prompts[i : i + 64] for i in range(0, 512, 64)]
read = f.heads_read
eng = f.engine


def run(ps, packed):
    return eng.suffix_attention_batch([p.prefix_ids for p in ps], [[p.query_ids, p.null_ids, p.sort_ids] for p in ps],
                                      rows=[[p.query_rows, p.null_rows, p.sort_rows] for p in ps], heads=read, packed=packed)


worst = 0.0
for ps in batches:
    a, b = run(ps, False), run(ps, True)
    worst = max(worst, (a - b).abs().max().item())
    scale = a.abs().max().item()
print(f"max abs difference packed vs two-pass: {worst:.3e} (max value {scale:.3f})")
for packed in (False, True) * 3:
    torch.cuda.synchronize()
    t = time.perf_counter()
    for ps in batches:
        run(ps, packed)
    torch.cuda.synchronize()
    print(f"packed={packed}: {time.perf_counter() - t:.3f} s for 512")
for packed in (False, True):
    torch.cuda.reset_peak_memory_stats()
    for ps in batches:
        run(ps, packed)
    print(f"packed={packed}: peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
