"""Where the device share of rank_many makes the host wait for the GPU
(torch.cuda.set_sync_debug_mode), without and with distraction.

    python3 scripts/gpu/syncs.py           (docs/gpu.md)
"""
import collections
import traceback
import warnings

import torch
from torch.profiler import ProfilerActivity, profile

from ragfocus import Focuser
from ragfocus.evaluation.datasets import hotpotqa

f = Focuser(device="cuda", distraction=False)
req = [(q.question, q.paragraphs) for q in hotpotqa(0, 192)]
f.rank_many(req[:64], batch_size=64); torch.cuda.synchronize()
seen = collections.Counter()
def show(message, category, filename, lineno, file=None, line=None):
    frames = [fr for fr in traceback.extract_stack() if "ragfocus" in fr.filename or "transformers" in fr.filename]
    key = " <- ".join(f"{fr.filename.split('/')[-1]}:{fr.lineno}:{fr.name}" for fr in frames[::-1][:4])
    seen[(str(message)[:60], key)] += 1
warnings.showwarning = show
warnings.simplefilter("always")
torch.cuda.set_sync_debug_mode(1)
f.rank_many(req[64:128], batch_size=64); torch.cuda.synchronize()
torch.cuda.set_sync_debug_mode(0)
for (msg, key), n in seen.most_common(40): print(f"{n:4d}  {msg} | {key}")
fd = Focuser(f.loaded)
fd.rank_many(req[:64], batch_size=64); torch.cuda.synchronize()
seen.clear(); torch.cuda.set_sync_debug_mode(1)
fd.rank_many(req[64:128], batch_size=64); torch.cuda.synchronize()
torch.cuda.set_sync_debug_mode(0)
print("--- with distraction")
for (msg, key), n in seen.most_common(40): print(f"{n:4d}  {msg} | {key}")
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=True) as prof:
    f.rank_many(req[64:192], batch_size=64); torch.cuda.synchronize()
print(prof.key_averages(group_by_stack_n=6).table(sort_by="cpu_time_total", row_limit=200, max_name_column_width=40).count("\n"))
for e in prof.key_averages(group_by_stack_n=8):
    if e.key in ("cudaStreamSynchronize", "cudaMemcpyAsync", "cudaDeviceSynchronize"):
        st = [s for s in e.stack if "ragfocus" in s or "transformers" in s][:4]
        print(f"{e.key} x{e.count} {e.cpu_time_total/1e3:.1f}ms | " + " <- ".join(st))
