"""GPU: the float16 capture, as two passes and as one packed row, against the float32 two-pass
capture on the same GPU (which equals the CPU's), dev 0-127 length-sorted, batches of 64: per
suffix the mean and largest absolute difference.

    python3 scripts/gpu/capture_precision_probe.py
"""
import torch

from ragfocus import Focuser
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.models import load_model
from ragfocus.passages import as_passages
from ragfocus.prompt import build_prompt

half = Focuser(device="cuda", distraction=False)
full = Focuser(load_model(device="cuda", dtype=torch.float32), distraction=False)
tok = half.loaded.tokenizer
prompts = [build_prompt(tok, q.question, [p.text for p in as_passages(q.paragraphs)]) for q in hotpotqa(0, 128)]
prompts.sort(key=lambda p: -len(p.prefix_ids))
read = half.heads_read


def run(f, ps, packed):
    return f.engine.suffix_attention_batch([p.prefix_ids for p in ps], [[p.query_ids, p.null_ids, p.sort_ids] for p in ps],
                                           rows=[[p.query_rows, p.null_rows, p.sort_rows] for p in ps], heads=read, packed=packed).float()


for start in (0, 64):
    ps = prompts[start : start + 64]
    ref = run(full, ps, False)
    for name, got in (("fp32 packed", run(full, ps, True)), ("fp16 two-pass", run(half, ps, False)), ("fp16 packed", run(half, ps, True))):
        d = (got - ref).abs()
        per_suffix = [f"{d[:, s].mean().item():.2e}/{d[:, s].max().item():.2e}" for s in range(d.shape[1])]
        worst = d.flatten(1).max(1).values
        print(f"batch {start}: {name:14s} mean/max per suffix {per_suffix}  worst prompt {worst.argmax().item()} {worst.max().item():.2e}  median prompt {worst.median().item():.2e}")
