"""Per-signal precision on the GPU: bf16 / fp16 against fp32, and each against the CPU reference.

    python3 scripts/gpu/precision.py TAG OUT.json docs/results/cpu-rankings-3000-3199.json [float32,bfloat16,float16]

Ranks HotpotQA validation 3000-3199 with the default Focuser (rank_many, batch 64) in each
dtype, prints the share with the CPU reference's top 2 and, against float32, the mean and max
change of each signal's z-score; writes the recordings to OUT.json (docs/gpu.md).
"""
import json
import math
import statistics as st
import sys
import time
from pathlib import Path

import torch

from ragfocus import Focuser
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.evaluation.rankings import compare_rankings
from ragfocus.models import load_model

tag = sys.argv[1]; out = sys.argv[2]
ref = json.loads(Path(sys.argv[3]).read_text())
qs = hotpotqa(3000, 200)
req = [(q.question, q.paragraphs) for q in qs]
runs = {}
names = sys.argv[4].split(",") if len(sys.argv) > 4 else ["float32", "bfloat16", "float16"]
for name in names:
    dt = getattr(torch, name)
    f = Focuser(load_model(None, device="cuda", dtype=dt))
    t = time.perf_counter()
    res = f.rank_many(req, batch_size=64)
    secs = time.perf_counter() - t
    rec = {"format": ref["format"], "questions": [
        {"index": q.index, "order": [p.index for p in r], "scores": [p.score for p in sorted(r, key=lambda p: p.index)]}
        for q, r in zip(qs, res)]}
    agree = compare_rankings(ref, rec)
    sig = [[dict(p.signals) for p in sorted(r, key=lambda p: p.index)] for r in res]
    runs[name] = {"rec": rec, "sig": sig}
    bad = sum(1 for r in res for p in r if not all(math.isfinite(v) for v in p.signals.values()))
    print(f"{tag} {name}: {secs:.1f}s same_top2 {agree.same_top2:.3f} differing {agree.differing} mean_diff {agree.mean_score_difference:.4f} max {agree.max_score_difference:.3f} non-finite passages {bad}", flush=True)
    del f; torch.cuda.empty_cache()
def z(v):
    m = st.fmean(v); s = st.pstdev(v) or 1.0
    return [(x - m) / s for x in v]
base = runs["float32"]["sig"] if "float32" in runs else None
for name in [n for n in runs if n != "float32" and base is not None]:
    other = runs[name]["sig"]
    keys = sorted(base[0][0])
    line = []
    for k in keys:
        d = []
        for a, b in zip(base, other):
            va = [p.get(k) for p in a]; vb = [p.get(k) for p in b]
            if None in va or None in vb or len(va) < 2: continue
            d += [abs(x - y) for x, y in zip(z(va), z(vb))]
        if d: line.append(f"{k}={st.fmean(d):.4f}/{max(d):.3f}")
    print(f"{tag} {name} vs float32, mean/max |dz| per signal: " + " ".join(line), flush=True)
Path(out).write_text(json.dumps({k: v["rec"] for k, v in runs.items()}))
