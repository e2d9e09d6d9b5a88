"""EventRecorder: the garbage collections (and, on CUDA, allocator events) of one block."""

from __future__ import annotations

import gc

import pytest
import torch

from ragfocus.evaluation.run_events import EventRecorder, RunEvents


def test_recorder_counts_the_collections_of_its_block_only() -> None:
    callbacks = len(gc.callbacks)
    recorder = EventRecorder(torch.device("cpu"))
    assert recorder.events is None
    with recorder:
        gc.collect()  # a full collection
        gc.collect(0)  # a young one
    events = recorder.events
    assert isinstance(events, RunEvents)
    assert events.collections[2] >= 1 and events.collections[0] >= 1
    assert events.collection_seconds[2] > 0
    assert events.device_allocations is None and events.allocation_retries is None  # not CUDA
    assert len(gc.callbacks) == callbacks
    gc.collect()
    assert recorder.events == events  # nothing counted after the block

    enabled = gc.isenabled()
    gc.disable()
    try:
        with recorder:  # a new block counts from zero
            pass
    finally:
        if enabled:
            gc.enable()
    assert recorder.events == RunEvents((0, 0, 0), (0.0, 0.0, 0.0), None, None)


def test_recorder_lets_go_of_the_collector_when_the_block_fails() -> None:
    callbacks = len(gc.callbacks)
    recorder = EventRecorder(torch.device("cpu"))
    with pytest.raises(RuntimeError, match="inside"), recorder:
        gc.collect()
        raise RuntimeError("inside")
    assert len(gc.callbacks) == callbacks
    assert recorder.events is not None and recorder.events.collections[2] >= 1
