"""Kernel time of each phase of a batch of 64 on the GPU (torch.profiler): the bare forward,
the prefix pass alone, the whole capture (prefix pass with the query + packed suffix pass), and
the signals.

    python3 scripts/gpu/phases.py            # dev 0-319 in input order, 4 batches (docs/gpu.md, 2026-11-25)
    python3 scripts/gpu/phases.py --sorted   # dev 0-511 length-sorted as rank_many does, 8 batches,
                                             # and the capture's kernels beyond the prefix pass
"""
import sys

import torch
from profiling import kernel_time, prepared_batch, print_difference
from transformers.cache_utils import DynamicCache

import ragfocus.focuser as F
from ragfocus import Focuser
from ragfocus.engine.capture import _CaptureSession
from ragfocus.engine.kernels import batched_attention_kernels, padded_width
from ragfocus.evaluation.bench import bare_forward
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.passages import as_passages
from ragfocus.scoring.batched import launch_prompt_signals
from ragfocus.scoring.heads import head_order

by_length = "--sorted" in sys.argv
count, runs = (512, 8) if by_length else (320, 4)
f = Focuser(device="cuda", distraction=False)
inputs = [(q.question, items, F._distinct(items)) for q in hotpotqa(0, count) for items in [as_passages(q.paragraphs)]]
if by_length:
    inputs.sort(key=lambda entry: -sum(len(text) for text in entry[2].texts))
batches = [prepared_batch(f, inputs[i : i + 64]) for i in range(0, count, 64)]
prompts = [[p for _, p in b.together] for b in batches]
if not by_length:
    prompts = prompts[1:]  # as first measured: the first batch only warms up
eng = f.engine
read = f._heads_read()
order = head_order(read)
print("heads read per layer:", {layer: len(heads) for layer, heads in sorted(read.items())})


def prefix_only(ps):
    index = eng.validate_heads(read)
    width = padded_width(max(len(p.prefix_ids) for p in ps))
    x = torch.zeros((len(ps), width), dtype=torch.long)
    for k, p in enumerate(ps):
        x[k, : len(p.prefix_ids)] = torch.tensor(p.prefix_ids)
    x = x.cuda()
    cache = DynamicCache(config=eng.model.config)
    with batched_attention_kernels(x.device), eng._session(_CaptureSession(heads=index, stop_after_layer=max(index))), torch.inference_mode():
        eng._run(x, cache, position_ids=torch.arange(width, device=x.device)[None].expand(len(ps), -1))


def capture(ps):
    suffixes = [[p.query_ids, p.null_ids, p.sort_ids] for p in ps]
    rows = [[p.query_rows, p.null_rows, p.sort_rows] for p in ps]
    return eng.suffix_attention_batch([p.prefix_ids for p in ps], suffixes, rows=rows, heads=read)


captured = [capture(ps) for ps in prompts[:runs]]


def signals(i):
    launch_prompt_signals(captured[i], order, [p.passage_spans for p in prompts[i]], heads=f.heads, weights=f.fusion.head_weights,
                          sort_heads=f._sort_heads, sink_factor=f.sink_factor, aggregate=f.aggregate).result()


kernel_time("bare forward", lambda i: bare_forward(f.loaded.model, [p.prefix_ids + p.query_ids for p in prompts[i]], batch_size=64), runs)
prefix = kernel_time("prefix pass alone", lambda i: prefix_only(prompts[i]), runs)
whole = kernel_time("capture (prefix pass with the query + packed suffix pass)", lambda i: capture(prompts[i]), runs, top=25)
kernel_time("signals", signals, runs)
if by_length:
    print_difference("capture minus prefix pass", whole, prefix, runs)
