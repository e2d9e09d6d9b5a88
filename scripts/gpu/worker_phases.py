"""Kernel time of the worker's whole share (_device_many) vs the capture alone, per batch of 64
(length-sorted, dev 0-1023); host-only time of tokenizing and fusing per 1,024 queries.

    python3 scripts/gpu/worker_phases.py      (docs/gpu.md)
"""
import time

import torch
from profiling import kernel_time, prepared_batch, print_difference

import ragfocus.focuser as F
from ragfocus import Focuser
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.passages import as_passages

f = Focuser(device="cuda", distraction=False)
inputs = [(q.question, items, F._distinct(items)) for q in hotpotqa(0, 1024) for items in [as_passages(q.paragraphs)]]
inputs.sort(key=lambda entry: -sum(len(text) for text in entry[2].texts))
chunks = [inputs[i : i + 64] for i in range(0, 1024, 64)]
started = time.perf_counter()
batches = [prepared_batch(f, chunk) for chunk in chunks]
print(f"host only: prepare 1024 {time.perf_counter() - started:.2f} s")
reads = [f._device_many(batch).resolved() for batch in batches]
started = time.perf_counter()
for chunk, batch, read in zip(chunks, batches, reads):
    f._finish_many(chunk, batch, read, errors="raise")
print(f"host only: finish 1024 {time.perf_counter() - started:.2f} s")
heads = f._heads_read()


def capture(i):
    ps = [p for _, p in batches[i].together]
    suffixes = [[p.query_ids, p.null_ids, p.sort_ids] for p in ps]
    rows = [[p.query_rows, p.null_rows, p.sort_rows] for p in ps]
    return f.engine.suffix_attention_batch([p.prefix_ids for p in ps], suffixes, rows=rows, heads=heads)


def device_share(i):
    return f._device_many(batches[i]).resolved()


alone = kernel_time("capture", capture, 8, top=0)
whole = kernel_time("_device_many", device_share, 8, top=0)
print_difference("_device_many minus capture", whole, alone, 8, top=12)
for name, run in (("capture", capture), ("_device_many", device_share)):
    torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(16):
        run(i)
    torch.cuda.synchronize()
    print(f"unprofiled {name}: {time.perf_counter() - started:.2f} s per 1024")
