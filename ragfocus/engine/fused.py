"""Fused RMSNorm: one kernel per norm instead of transformers' six elementwise ones.

Llama-family models (Llama, Qwen2, Mistral, SmolLM2) normalise with ``weight *
(x.float() * rsqrt(mean(x.float()^2) + eps)).to(x.dtype)``: in eager PyTorch that is a cast,
a square, a mean, an rsqrt, two products and a cast back, each reading and writing the whole
activation, in float32 for most of them. ``torch.nn.functional.rms_norm`` does the same in
one CUDA kernel that accumulates in float32 and rounds once. With the default model in
float16 on a GPU, the bare batched forward over HotpotQA prompts measured markedly faster with
this one than with transformers' norms (``scripts/gpu/fusion_probe.py``; figures in
``docs/gpu.md``); the model's other elementwise layers (rotary embedding, SwiGLU) are left as
they are.

A norm is replaced only after a float32 copy of it gives, on random input, the same output
through ``rms_norm`` as through its own ``forward``: a norm with another formula (Gemma's
``1 + weight``, say) fails that check and is left alone. The replacement is an instance
attribute, so ``restore_norms`` (or ``unfused_norms`` for a while) gives the model back
exactly as it was.
"""

from __future__ import annotations

import copy
import logging
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

_MARK = "_ragfocus_fused_norm"
"""Attribute set on a module whose ``forward`` this module replaced."""


def fuse_norms(model: torch.nn.Module) -> int:
    """Replace the forward of every RMSNorm of ``model`` that computes the Llama formula by
    ``torch.nn.functional.rms_norm``; return how many were replaced. Idempotent."""
    agrees: dict[type, bool] = {}
    fused = 0
    for module in model.modules():
        if getattr(module, _MARK, False):
            fused += 1
            continue
        if not _looks_like_rms_norm(module):
            continue
        kind = type(module)
        if kind not in agrees:
            agrees[kind] = _same_as_own_forward(module)
            if not agrees[kind]:
                logger.info("%s computes another formula than rms_norm; left unfused", kind.__name__)
        if agrees[kind]:
            _fuse(module)
            fused += 1
    return fused


def restore_norms(model: torch.nn.Module) -> int:
    """Undo ``fuse_norms``: every replaced norm runs its own ``forward`` again; return how many."""
    restored = 0
    for module in model.modules():
        if getattr(module, _MARK, False):
            del module.forward
            delattr(module, _MARK)
            restored += 1
    return restored


@contextmanager
def unfused_norms(model: torch.nn.Module) -> Iterator[int]:
    """Run ``model`` with its own norms inside the block (for a comparison); yields how many
    norms were fused before, and fuses exactly those again after."""
    restored = [module for module in model.modules() if getattr(module, _MARK, False)]
    restore_norms(model)
    try:
        yield len(restored)
    finally:
        for module in restored:
            _fuse(module)


def fused_norm_count(model: torch.nn.Module) -> int:
    """How many of ``model``'s norms run ``rms_norm`` now."""
    return sum(1 for module in model.modules() if getattr(module, _MARK, False))


def _fuse(module: torch.nn.Module) -> None:
    module.forward = types.MethodType(_fused_forward, module)
    setattr(module, _MARK, True)


def _fused_forward(module: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    weight = cast(torch.Tensor, module.weight)
    if hidden.dtype != weight.dtype:  # autocast or mixed dtypes: the module's own formula
        return cast(torch.Tensor, type(module).forward(module, hidden))
    return F.rms_norm(hidden, (hidden.shape[-1],), weight=weight, eps=cast(float, module.variance_epsilon))


def _looks_like_rms_norm(module: torch.nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__.endswith("RMSNorm")
        and isinstance(weight, torch.nn.Parameter)
        and weight.dim() == 1
        and isinstance(getattr(module, "variance_epsilon", None), float)
        and not list(module.children())
    )


def _same_as_own_forward(module: torch.nn.Module) -> bool:
    """Whether a float32 copy of ``module`` gives the same output through ``rms_norm`` as
    through its own ``forward`` (random weight and input, so a ``1 + weight`` shows)."""
    probe = copy.deepcopy(module).to(device="cpu", dtype=torch.float32)
    weight = cast(torch.Tensor, probe.weight)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        weight.copy_(torch.rand(tuple(weight.shape), generator=generator) + 0.5)
        hidden = torch.randn((3, 5, int(weight.shape[0])), generator=generator) * 4
        own = type(probe).forward(probe, hidden)
        fused = _fused_forward(probe, hidden)
    return own.shape == fused.shape and bool(torch.allclose(own, fused, rtol=1e-4, atol=1e-5))
