"""Where rank_many's time goes on a GPU, and two experiments (docs/gpu.md, "2026-11-25, second
session"):

    python3 scripts/gpu/worker.py worker      # bare forward / the device worker alone / rank_many,
                                              # dev 0-1023, batch 64, and the GPU busy share of each
    python3 scripts/gpu/worker.py autocast docs/results/cpu-rankings-3000-3199.json
                                              # bf16 vs float32 weights under bf16 autocast:
                                              # agreement on 3000-3199 and speed on dev 0-1023
    python3 scripts/gpu/worker.py switch      # rank_many under sys.setswitchinterval 5 / 1 / 0.2 ms
"""
import json
import sys
import time
from pathlib import Path

import torch
from profiling import prepared_batch
from torch.profiler import ProfilerActivity, profile

import ragfocus.engine.capture as C
import ragfocus.focuser as F
from ragfocus import Focuser
from ragfocus.evaluation.bench import bare_forward
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.evaluation.rankings import compare_rankings
from ragfocus.models import load_model
from ragfocus.passages import as_passages

part = sys.argv[1]
sync = torch.cuda.synchronize
def busy(p, t0=None):
    ks = sorted((e.time_range.start, e.time_range.end) for e in p.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    total = 0; cur_s, cur_e = ks[0]
    for s, e in ks[1:]:
        if s > cur_e: total += cur_e - cur_s; cur_s, cur_e = s, e
        else: cur_e = max(cur_e, e)
    total += cur_e - cur_s
    return total / 1e6, (ks[-1][1] - ks[0][0]) / 1e6, len(ks)

for name in ("packed_row_attention", "query_row_attention"):
    fn = getattr(C, name)
    def wrapped(*a, _fn=fn, **k):
        with torch.autocast("cuda", enabled=False):
            return _fn(*a, **k)
    setattr(C, name, wrapped)

def autocast_model(loaded):
    base = loaded.model.base_model; orig = base.forward
    def fwd(*a, **k):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return orig(*a, **k)
    base.forward = fwd
    return loaded

if part == "worker":
    f = Focuser(device="cuda", distraction=False)
    qs = hotpotqa(0, 1024)
    inputs = []
    for q in qs:
        items = as_passages(q.paragraphs); inputs.append((q.question, items, F._distinct(items)))
    order = sorted(range(len(inputs)), key=lambda n: -sum(len(t) for t in inputs[n][2].texts))
    t = time.perf_counter()
    batches = [prepared_batch(f, [inputs[n] for n in order[i:i+64]]) for i in range(0, 1024, 64)]
    print(f"prepare all: {time.perf_counter()-t:.2f} s")
    ids = [p.prefix_ids + p.query_ids for b in batches for _, p in b.together]
    req = [(q.question, q.paragraphs) for q in qs]
    f._device_many(batches[0]); bare_forward(f.loaded.model, ids[:64], batch_size=64); f.rank_many(req[:64], batch_size=64); sync()
    for rnd in range(2):
        sync(); t = time.perf_counter(); bare_forward(f.loaded.model, ids, batch_size=64); sync(); bare = time.perf_counter() - t
        t = time.perf_counter()
        for b in batches: f._device_many(b)
        sync(); worker = time.perf_counter() - t
        t = time.perf_counter(); f.rank_many(req, batch_size=64); sync(); rank = time.perf_counter() - t
        print(f"round {rnd}: bare {bare:.2f} s, worker alone {worker:.2f} s ({worker/bare:.2f}x), rank_many {rank:.2f} s ({rank/bare:.2f}x), split {json.dumps({k: round(v, 2) for k, v in f.last_batch_seconds.items()})}")
    for label, fn in (("bare", lambda: bare_forward(f.loaded.model, ids[:512], batch_size=64)),
                      ("worker alone", lambda: [f._device_many(b) for b in batches[:8]]),
                      ("rank_many", lambda: f.rank_many([req[n] for n in order[:512]], batch_size=64))):
        sync()
        with profile(activities=[ProfilerActivity.CUDA]) as p:
            t = time.perf_counter(); fn(); sync(); wall = time.perf_counter() - t
        b, span, n = busy(p)
        print(f"profile {label} (512 q): wall {wall:.2f} s, kernel span {span:.2f} s, GPU busy {b:.2f} s = {b/wall:.0%} of wall, {n} kernels")

if part == "autocast":
    ref = json.loads(Path(sys.argv[2]).read_text())
    val = hotpotqa(3000, 200); vreq = [(q.question, q.paragraphs) for q in val]
    dev = hotpotqa(0, 1024); dreq = [(q.question, q.paragraphs) for q in dev]
    variants = {"bf16": load_model(None, device="cuda", dtype=torch.bfloat16),
                "autocast": autocast_model(load_model(None, device="cuda", dtype=torch.float32))}
    for name, loaded in variants.items():
        f = Focuser(loaded)
        res = f.rank_many(vreq, batch_size=64)
        rec = {"format": ref["format"], "questions": [
            {"index": q.index, "order": [p.index for p in r], "scores": [p.score for p in sorted(r, key=lambda p: p.index)]} for q, r in zip(val, res)]}
        a = compare_rankings(ref, rec)
        print(f"precision {name}: same_top2 {a.same_top2:.3f} differing {a.differing} mean_diff {a.mean_score_difference:.4f} max {a.max_score_difference:.3f}")
    fs = {name: (Focuser(l, distraction=False), Focuser(l)) for name, l in variants.items()}
    for name, (nd, df) in fs.items():
        nd.rank_many(dreq[:64], batch_size=64); df.rank_many(dreq[:64], batch_size=64)
    for rnd in range(2):
        for name, (nd, df) in fs.items():
            sync(); t = time.perf_counter(); nd.rank_many(dreq, batch_size=64); sync(); a = time.perf_counter() - t
            t = time.perf_counter(); df.rank_many(dreq, batch_size=64); sync(); b = time.perf_counter() - t
            print(f"speed round {rnd} {name}: no distraction {1024/a:.1f} q/s, default {1024/b:.1f} q/s (distraction {df.last_batch_seconds['distraction']:.2f} s), peak {torch.cuda.max_memory_allocated()/2**20:.0f} MiB")

if part == "switch":
    f = Focuser(device="cuda", distraction=False)
    req = [(q.question, q.paragraphs) for q in hotpotqa(0, 1024)]
    f.rank_many(req[:64], batch_size=64)
    for rnd in range(2):
        for interval in (0.005, 0.001, 0.0002):
            sys.setswitchinterval(interval)
            sync(); t = time.perf_counter(); f.rank_many(req, batch_size=64); sync(); a = time.perf_counter() - t
            print(f"switch {interval}: {1024/a:.1f} q/s split {json.dumps({k: round(v, 2) for k, v in f.last_batch_seconds.items()})}")
    sys.setswitchinterval(0.005)
