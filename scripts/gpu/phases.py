"""Kernel time of each phase of a batch of 64 on the GPU (4 batches each, torch.profiler):
the bare forward, the prefix pass, prefix + packed suffix pass + capture, and the signals.

    python3 scripts/gpu/phases.py          (docs/gpu.md)
"""
import collections

import torch
from torch.profiler import ProfilerActivity, profile
from transformers.cache_utils import DynamicCache

import ragfocus.focuser as F
from ragfocus import Focuser
from ragfocus.engine.capture import _CaptureSession
from ragfocus.engine.kernels import batched_attention_kernels, padded_width
from ragfocus.evaluation.bench import bare_forward
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.passages import as_passages
from ragfocus.scoring.batched import batched_prompt_signals
from ragfocus.scoring.heads import head_order

f = Focuser(device="cuda", distraction=False)
qs = hotpotqa(0, 320)
inputs = []
for q in qs:
    items = as_passages(q.paragraphs); inputs.append((q.question, items, F._distinct(items)))
batches = [f._prepare_many(inputs[i:i+64], sentences=False, errors="raise") for i in range(0, 320, 64)]
prompts = [[p for _, p in b.together] for b in batches]
eng = f.engine; read = f._heads_read(); order = head_order(read)
print("heads read:", sum(len(v) for v in read.values()), "layers", sorted(read))
def prefix_only(ps):
    index = eng.validate_heads(read); last = max(index)
    prefixes = [p.prefix_ids for p in ps]; width = padded_width(max(map(len, prefixes)))
    x = torch.zeros((len(ps), width), dtype=torch.long)
    for k, p in enumerate(prefixes): x[k, :len(p)] = torch.tensor(p)
    x = x.cuda(); cache = DynamicCache(config=eng.model.config)
    with batched_attention_kernels(x.device), eng._session(_CaptureSession(heads=index, stop_after_layer=last)), torch.inference_mode():
        eng._run(x, cache, position_ids=torch.arange(width, device=x.device)[None].expand(len(ps), -1))
def capture(ps):
    s = [[p.query_ids, p.null_ids, p.sort_ids] for p in ps]; r = [[p.query_rows, p.null_rows, p.sort_rows] for p in ps]
    return eng.suffix_attention_batch([p.prefix_ids for p in ps], s, rows=r, heads=read)
caps = [capture(ps) for ps in prompts[1:]]
def signals(i):
    batched_prompt_signals(caps[i], order, [p.passage_spans for p in prompts[i + 1]], heads=f.heads, weights=f.fusion.head_weights,
                           sort_heads=f._sort_heads, sink_factor=f.sink_factor, aggregate=f.aggregate)
def prof(name, fn):
    fn(0); torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        for i in range(4): fn(i)
        torch.cuda.synchronize()
    ks = [e for e in p.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by = collections.Counter(); n = collections.Counter()
    for e in ks: by[e.name[:100]] += e.device_time; n[e.name[:100]] += 1
    total = sum(by.values()) / 4e3
    print(f"== {name}: {total:.1f} ms kernel time per batch, {len(ks)/4:.0f} kernels per batch")
    for k, us in by.most_common(12): print(f"   {us/4e3:7.2f} ms {n[k]/4:6.0f}x {k}")
prof("bare forward", lambda i: bare_forward(f.loaded.model, [p.prefix_ids + p.query_ids for p in prompts[i + 1]], batch_size=64))
prof("prefix pass", lambda i: prefix_only(prompts[i + 1]))
prof("prefix + suffix + capture", lambda i: capture(prompts[i + 1]))
prof("signals", signals)
