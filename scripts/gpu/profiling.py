"""Kernel time per batch with torch.profiler, shared by the GPU measurement scripts here."""
import collections
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def kernel_time(name: str, run: Callable[[int], object], batches: int, *, top: int = 12) -> collections.Counter:
    """Run ``run(0)`` once to warm up, then ``run(i)`` for i < ``batches`` under the profiler;
    print the kernel time and kernel count per batch, the profiled wall time per batch and the
    ``top`` kernels; return microseconds per kernel name, summed over the batches."""
    run(0)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as profiled:
        started = time.perf_counter()
        for i in range(batches):
            run(i)
        torch.cuda.synchronize()
        wall = time.perf_counter() - started
    kernels = [e for e in profiled.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_name: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for event in kernels:
        by_name[event.name[:90]] += event.device_time
        count[event.name[:90]] += 1
    print(f"== {name}: {sum(by_name.values()) / batches / 1e3:.1f} ms kernel time per batch, "
          f"{len(kernels) / batches:.0f} kernels per batch, wall {wall / batches * 1e3:.1f} ms per batch (profiled)")
    for kernel, micros in by_name.most_common(top):
        print(f"   {micros / batches / 1e3:7.2f} ms {count[kernel] / batches:6.0f}x {kernel}")
    return by_name


def print_difference(title: str, more: collections.Counter, less: collections.Counter, batches: int, *, top: int = 20) -> None:
    """The kernels whose time per batch grew most from ``less`` to ``more``."""
    print(f"== {title}, by kernel:")
    for kernel in sorted(set(more) | set(less), key=lambda k: -(more.get(k, 0) - less.get(k, 0)))[:top]:
        print(f"   {(more.get(kernel, 0) - less.get(kernel, 0)) / batches / 1e3:7.2f} ms {kernel}")


def prepared_batch(focuser, chunk):
    """``Focuser._prepare_many`` of a chunk of ``(query, items, distinct)`` inputs, tokenized in
    this thread (``ragfocus.preparation.prepare_inputs``)."""
    from ragfocus.preparation import prepare_inputs

    host = prepare_inputs(
        focuser.loaded.tokenizer, [(query, distinct.texts) for query, _, distinct in chunk],
        prompt_tokens=focuser.prompt_tokens, sentences=False, distraction=focuser.distraction,
    )
    return focuser._prepare_many(chunk, host, sentences=False, errors="raise")
