"""Where the distraction pass's time goes on a GPU: the distraction prompts of HotpotQA dev
0-(PROBE_COUNT-1), length-sorted, PROBE_CHUNK prompts at a time, scored

- ``plain``: each prompt run whole (no KV cache);
- ``shared-mask``: the prompts' shared first tokens run once and cached, the rest after them
  with transformers' mask (a boolean mask: SDPA leaves its flash kernel);
- ``shared``: the same with ``after_cached_prefix`` (no mask, lower-right causal attention),
  what ``launch_distraction`` did on CUDA until the sixth session;
- ``packed``: the prompts packed end to end, PROBE_PACKED_TOKENS tokens a pass, with no padding
  (``ragfocus.engine.varlen``);
- ``packed-shared``: packed after the shared first tokens' cached keys and values.

    python3 scripts/gpu/distraction_probe.py

Prints, per variant, seconds (median of PROBE_REPEAT alternating runs), the largest
log-probability difference from ``plain``, and the top CUDA kernels of one profiled run.
"""
import contextlib
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

from ragfocus import Focuser
from ragfocus.engine.kernels import PAD_MULTIPLE, batched_attention_kernels
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.scoring import distraction

DEVICE = os.environ.get("PROBE_DEVICE", "cuda")
COUNT = int(os.environ.get("PROBE_COUNT", "512"))
CHUNK = int(os.environ.get("PROBE_CHUNK", "256"))
REPEAT = int(os.environ.get("PROBE_REPEAT", "3"))
PACKED_TOKENS = int(os.environ.get("PROBE_PACKED_TOKENS", str(distraction.PACKED_TOKENS)))

focuser = Focuser(device=DEVICE)
model = focuser.loaded.model
prompts = distraction.tokenize_distraction(focuser.loaded.tokenizer, [(q.question, q.paragraphs) for q in hotpotqa(0, COUNT)])
sequences = sorted(prompts.sequences, key=len)
chunks = [sequences[first : first + CHUNK] for first in range(0, len(sequences), CHUNK)]
print(f"{len(sequences)} prompts, {sum(map(len, sequences)) / len(sequences):.1f} tokens on average, chunks of {CHUNK}", flush=True)
padded = sum(len(chunk) * -(-max(map(len, chunk)) // PAD_MULTIPLE) * PAD_MULTIPLE for chunk in chunks)
print(f"padded tokens per real token in the chunks: {padded / sum(map(len, sequences)):.2f}", flush=True)


def packed_run(with_prefix: bool) -> list[torch.Tensor]:
    prefix = distraction.shared_prefix(model, sequences, keep=prompts.answer_length + 1) if with_prefix else None
    skipped = 0 if prefix is None else len(prefix.ids)
    passes = distraction.packed_chunks([len(sequence) - skipped for sequence in sequences], max_prompts=len(sequences), max_tokens=PACKED_TOKENS)
    return [
        distraction.packed_logprobs(model, [sequences[index] for index in chunk], prompts.answer_length, prefix=prefix)
        for chunk in passes
    ]


def run(variant: str) -> torch.Tensor:
    with torch.inference_mode(), batched_attention_kernels(torch.device(DEVICE)):
        if variant.startswith("packed"):
            return torch.cat(packed_run(variant == "packed-shared")).cpu()
        prefix = None if variant == "plain" else distraction.shared_prefix(model, sequences, keep=prompts.answer_length + 1)
        context = contextlib.nullcontext if variant == "shared-mask" else distraction.after_cached_prefix
        saved = distraction.after_cached_prefix
        distraction.after_cached_prefix = context
        try:
            found = [
                distraction.sequence_logprobs(model, chunk, prompts.answer_length, pad_multiple=PAD_MULTIPLE, prefix=prefix)
                for chunk in chunks
            ]
        finally:
            distraction.after_cached_prefix = saved
        return torch.cat(found).cpu()


def timed(variant: str) -> float:
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    run(variant)
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


variants = os.environ.get("PROBE_VARIANTS", "plain,shared,packed,packed-shared").split(",")
reference = run("plain")
for variant in variants:
    difference = (run(variant) - reference).abs().max().item()
    print(f"{variant}: max |log-prob difference| from plain {difference:.2e}", flush=True)
seconds: dict[str, list[float]] = {variant: [] for variant in variants}
for _ in range(REPEAT):
    for variant in variants:
        seconds[variant].append(timed(variant))
for variant in variants:
    runs = sorted(seconds[variant])
    print(f"{variant}: median {runs[len(runs) // 2]:.3f} s of {', '.join(f'{value:.3f}' for value in seconds[variant])}", flush=True)
if DEVICE == "cuda":
    for variant in os.environ.get("PROBE_PROFILE", ",".join(variants)).split(","):
        if not variant:
            continue
        with profile(activities=[ProfilerActivity.CUDA]) as trace:
            run(variant)
        print(f"--- {variant}", flush=True)
        print(trace.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=70), flush=True)
