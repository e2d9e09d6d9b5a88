"""Kernel time of the worker's whole share (_device_many) vs the capture alone, per batch of 64
(length-sorted, dev 0-1023); host-only time of tokenizing and fusing per 1,024 queries.

    python3 scripts/gpu/worker_phases.py      (docs/gpu.md)
"""
import collections
import time

import torch
from torch.profiler import ProfilerActivity, profile

import ragfocus.focuser as F
from ragfocus import Focuser
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.passages import as_passages

f = Focuser(device="cuda", distraction=False)
qs = hotpotqa(0, 1024)
inputs = [(q.question, it, F._distinct(it)) for q in qs for it in [as_passages(q.paragraphs)]]
order = sorted(range(len(inputs)), key=lambda n: -sum(len(t) for t in inputs[n][2].texts))
chunks = [[inputs[n] for n in order[i:i+64]] for i in range(0, 1024, 64)]
t = time.perf_counter(); batches = [f._prepare_many(c, sentences=False, errors="raise") for c in chunks]
print(f"host only: prepare 1024 {time.perf_counter()-t:.2f} s")
reads = [f._device_many(b) for b in batches]; torch.cuda.synchronize()
t = time.perf_counter()
for c, b, r in zip(chunks, batches, reads): f._finish_many(c, b, r, errors="raise")
print(f"host only: finish 1024 {time.perf_counter()-t:.2f} s")
t = time.perf_counter()
for c, b, r in zip(chunks, batches, reads):
    for number, _ in enumerate(b.together): f._assemble(c[number][1], c[number][2], None, sentences=False)
print(f"host only: assemble-ish 1024 {time.perf_counter()-t:.2f} s")
eng = f.engine; read = f._heads_read()
def capture(ps):
    s = [[p.query_ids, p.null_ids, p.sort_ids] for p in ps]; r = [[p.query_rows, p.null_rows, p.sort_rows] for p in ps]
    return eng.suffix_attention_batch([p.prefix_ids for p in ps], s, rows=r, heads=read)
def prof(name, fn, top=0):
    fn(0); torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as p:
        t = time.perf_counter()
        for i in range(8): fn(i)
        torch.cuda.synchronize(); wall = time.perf_counter() - t
    ks = [e for e in p.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by = collections.Counter(); n = collections.Counter()
    for e in ks: by[e.name[:90]] += e.device_time; n[e.name[:90]] += 1
    print(f"== {name}: {sum(by.values())/8e3:.1f} ms kernel time per batch, {len(ks)/8:.0f} kernels, wall {wall/8*1e3:.1f} ms per batch (profiled)")
    for k, us in by.most_common(top): print(f"   {us/8e3:7.2f} ms {n[k]/8:6.0f}x {k}")
    return by
c = prof("capture", lambda i: capture([p for _, p in batches[i].together]))
d = prof("_device_many", lambda i: f._device_many(batches[i]))
print("== _device_many minus capture, by kernel:")
for k in sorted(set(c) | set(d), key=lambda k: -(d.get(k, 0) - c.get(k, 0)))[:12]:
    print(f"   {(d.get(k, 0) - c.get(k, 0))/8e3:7.2f} ms {k}")
for name, fn in (("capture", lambda i: capture([p for _, p in batches[i].together])), ("_device_many", lambda i: f._device_many(batches[i]))):
    torch.cuda.synchronize(); t = time.perf_counter()
    for i in range(16): fn(i)
    torch.cuda.synchronize(); print(f"unprofiled {name}: {time.perf_counter()-t:.2f} s per 1024")
