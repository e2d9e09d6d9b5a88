"""Kernel time per batch of 64 (dev 0-511 length-sorted, as rank_many): bare forward, prefix
pass alone, the whole capture (prefix with the query continued + packed null/sort suffixes),
and the capture's kernels beyond the prefix pass.

    python3 scripts/gpu/phases_sorted.py      (docs/gpu.md)
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

f = Focuser(device="cuda", distraction=False)
qs = hotpotqa(0, 512)
inputs = [(q.question, it, F._distinct(it)) for q in qs for it in [as_passages(q.paragraphs)]]
order = sorted(range(len(inputs)), key=lambda n: -sum(len(t) for t in inputs[n][2].texts))
batches = [f._prepare_many([inputs[n] for n in order[i:i+64]], sentences=False, errors="raise") for i in range(0, 512, 64)]
prompts = [[p for _, p in b.together] for b in batches]
eng = f.engine; read = f._heads_read()
def prefix_only(ps):
    index = eng.validate_heads(read); last = max(index)
    width = padded_width(max(len(p.prefix_ids) for p in ps))
    x = torch.zeros((len(ps), width), dtype=torch.long)
    for k, p in enumerate(ps): x[k, :len(p.prefix_ids)] = torch.tensor(p.prefix_ids)
    x = x.cuda(); cache = DynamicCache(config=eng.model.config)
    with batched_attention_kernels(x.device), eng._session(_CaptureSession(heads=index, stop_after_layer=last)), torch.inference_mode():
        eng._run(x, cache, position_ids=torch.arange(width, device=x.device)[None].expand(len(ps), -1))
def capture(ps):
    s = [[p.query_ids, p.null_ids, p.sort_ids] for p in ps]; r = [[p.query_rows, p.null_rows, p.sort_rows] for p in ps]
    return eng.suffix_attention_batch([p.prefix_ids for p in ps], s, rows=r, heads=read)
def prof(name, fn, top=0):
    fn(0); torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        for i in range(8): fn(i)
        torch.cuda.synchronize()
    ks = [e for e in p.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by = collections.Counter(); n = collections.Counter()
    for e in ks: by[e.name[:90]] += e.device_time; n[e.name[:90]] += 1
    print(f"== {name}: {sum(by.values())/8e3:.1f} ms kernel time per batch, {len(ks)/8:.0f} kernels per batch")
    for k, us in by.most_common(top): print(f"   {us/8e3:7.2f} ms {n[k]/8:6.0f}x {k}")
    return by
print("heads read per layer:", {l: len(h) for l, h in sorted(read.items())})
a = prof("bare forward", lambda i: bare_forward(f.loaded.model, [p.prefix_ids + p.query_ids for p in prompts[i]], batch_size=64), 10)
b = prof("prefix pass alone", lambda i: prefix_only(prompts[i]), 10)
c = prof("capture", lambda i: capture(prompts[i]), 25)
print("== capture minus prefix pass, by kernel:")
for k in sorted(set(b) | set(c), key=lambda k: -(c.get(k, 0) - b.get(k, 0)))[:20]:
    print(f"   {(c.get(k, 0) - b.get(k, 0))/8e3:7.2f} ms {k}")
