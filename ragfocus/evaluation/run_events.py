"""What the process did besides the timed work while a bench phase ran.

Runs of the same ``Focuser.rank_many`` on a GPU differ by up to 0.9 s in 5 (one run in three
faster than the other two) while the bare forwards differ by under 0.03 s (``docs/gpu.md``).
Two things outside the work can hold it up, and ``EventRecorder`` counts both per run:

- Python's garbage collections, in any thread: each holds the interpreter's lock, so the thread
  that launches the device's kernels waits for it;
- on CUDA, the caching allocator's new device allocations (``cudaMalloc``) and its retries
  (an allocation that fails frees the cached blocks first, which waits for the device).

>>> with EventRecorder(torch.device("cpu")) as recorder:   # doctest: +SKIP
...     work()
>>> recorder.events                                         # doctest: +SKIP
RunEvents(collections=(151, 14, 0), collection_seconds=(0.146, 0.088, 0.0), device_allocations=None, allocation_retries=None)
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch


@dataclass(frozen=True)
class RunEvents:
    """Per generation (young, middle, full): the collections and their seconds; on CUDA the
    allocator's new device allocations and retries (``None`` elsewhere)."""

    collections: tuple[int, int, int]
    collection_seconds: tuple[float, float, float]
    device_allocations: int | None
    allocation_retries: int | None


class EventRecorder:
    """Counts garbage collections and CUDA allocator events between ``__enter__`` and
    ``__exit__``; ``events`` holds them after the block. One block at a time per recorder."""

    def __init__(self, device: torch.device) -> None:
        self._cuda = device if device.type == "cuda" else None
        self._counts = [0, 0, 0]
        self._seconds = [0.0, 0.0, 0.0]
        self._started: float | None = None
        self._allocator_before: dict[str, Any] = {}
        self.events: RunEvents | None = None

    def __enter__(self) -> EventRecorder:
        self._counts, self._seconds, self._started, self.events = [0, 0, 0], [0.0, 0.0, 0.0], None, None
        if self._cuda is not None:
            self._allocator_before = torch.cuda.memory_stats(self._cuda)
        gc.callbacks.append(self._on_collection)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        gc.callbacks.remove(self._on_collection)
        allocations = retries = None
        if self._cuda is not None:
            after = torch.cuda.memory_stats(self._cuda)
            allocations = _delta(after, self._allocator_before, "num_device_alloc")
            retries = _delta(after, self._allocator_before, "num_alloc_retries")
        self.events = RunEvents(
            collections=(self._counts[0], self._counts[1], self._counts[2]),
            collection_seconds=(self._seconds[0], self._seconds[1], self._seconds[2]),
            device_allocations=allocations,
            allocation_retries=retries,
        )

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        # One collection runs at a time in a process (it holds the interpreter's lock).
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            generation = info["generation"]
            self._counts[generation] += 1
            self._seconds[generation] += time.perf_counter() - self._started
            self._started = None


def _delta(after: dict[str, Any], before: dict[str, Any], key: str) -> int | None:
    if key not in after:
        return None
    return int(after[key]) - int(before.get(key, 0))
