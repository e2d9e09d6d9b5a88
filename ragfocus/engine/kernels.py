"""Shape and kernel choices that keep batched forward passes fast on a GPU.

Measured on a GPU (``docs/gpu.md``): with every batch padded to its own longest prompt, each
batch brings new tensor shapes, and cuDNN's fused attention, which PyTorch's SDPA prefers on
recent NVIDIA GPUs, spent host time on every call re-planning for them (``torch.profiler``,
``docs/results/gpu-profile-rank-many.txt``). Widths are therefore rounded up to a multiple of
``PAD_MULTIPLE`` (the extra positions are masked padding, so no result changes) and SDPA is
kept to its flash, memory-efficient and math kernels.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

PAD_MULTIPLE = 64
"""Batched widths are rounded up to a multiple of this many tokens."""

_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def padded_width(longest: int, multiple: int = PAD_MULTIPLE) -> int:
    """``longest`` rounded up to a multiple of ``multiple``."""
    return -(-longest // multiple) * multiple


@contextmanager
def batched_attention_kernels(device: torch.device) -> Iterator[None]:
    """On CUDA, SDPA without cuDNN's attention for the enclosed forward passes; elsewhere nothing."""
    if device.type != "cuda":
        yield
        return
    with sdpa_kernel(_BACKENDS):
        yield


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (on the host) copied to ``device`` without making the host wait.

    A copy from pageable host memory to a GPU synchronises the stream: the calling thread
    waits for every kernel queued before it and then has to win the GIL back before it can
    launch the next one, while the GPU idles (``docs/gpu.md``). From pinned memory the copy
    is queued like a kernel. Elsewhere this is ``tensor.to(device)``.
    """
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class HostCopy:
    """A device tensor's copy to the host, started without making the host wait.

    On CUDA the copy goes into pinned memory behind the kernels already queued, and
    ``result`` waits for it (without the GIL). So the thread that launches a batch's kernels
    can launch the next batch while this one still runs, and the GPU is not left idle between
    batches while the host reads results and builds the next inputs (``docs/gpu.md``).
    Elsewhere the copy is made at once.
    """

    def __init__(self, tensor: torch.Tensor) -> None:
        self._event: torch.cuda.Event | None = None
        if tensor.device.type != "cuda":
            self._host = tensor.cpu()
            return
        self._host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        self._host.copy_(tensor, non_blocking=True)
        self._event = torch.cuda.Event()
        self._event.record(torch.cuda.current_stream(tensor.device))

    def result(self) -> torch.Tensor:
        """The host tensor, once the copy is done."""
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        return self._host
