"""SwiGLU under ``torch.compile``: the gated MLP's ``silu(gate) * up`` as one generated kernel.

Llama-family MLPs (Llama, Qwen2, Mistral, SmolLM2) compute ``down(silu(gate(x)) * up(x))``
(Shazeer, 2020, "GLU Variants Improve Transformer"). In eager PyTorch the activation and the
product are two kernels that each read and write the whole ``intermediate_size`` activation
(1,536 wide in the default model, 2.7x the hidden size), 30 times per forward.
``torch.compile`` (Inductor, Triton on CUDA) makes them one. The three projections stay the
model's own ``Linear`` layers; only the elementwise middle is compiled, with ``dynamic=True``
so every batch shape reuses one graph.

It needs a working compiler at run time (Triton on CUDA, a C++ compiler on CPU), so it is
opt-in (``load_model(compiled_mlps=True)``, ``ragfocus bench --compile-mlps``), and it compiles
once when the MLPs are replaced: if that fails, a warning names the error and the MLPs stay as
they are; nothing is lost but the speed.

An MLP is replaced only after a float32 copy of it gives, on random input, the same output
through ``down(silu(gate(x)) * up(x))`` as through its own ``forward`` (checked in eager mode):
an MLP with another activation or formula is left alone. The replacement is an instance
attribute, so ``restore_mlps`` gives the model back exactly as it was.
"""

from __future__ import annotations

import copy
import functools
import logging
import types
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

_MARK = "_ragfocus_compiled_mlp"
"""Attribute set on a module whose ``forward`` this module replaced."""


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up``, the SwiGLU gate (Shazeer, 2020), in eager PyTorch."""
    return F.silu(gate) * up


@functools.cache
def compiled_swiglu() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``swiglu`` under ``torch.compile(dynamic=True)``: one function for every replaced MLP of
    every model, so each shape class compiles once per process."""
    return cast(Callable[[torch.Tensor, torch.Tensor], torch.Tensor], torch.compile(swiglu, dynamic=True))


def try_compile(width: int, *, device: torch.device, dtype: torch.dtype) -> str | None:
    """Compile the SwiGLU for ``width``-wide activations on ``device`` in ``dtype`` now, on a
    padded batch and on one packed row (a leading 1 is a shape class of its own), under
    ``torch.inference_mode`` as ragfocus runs the model; return ``None``, or the error that
    shows compiling does not work here (no Triton, no C++ compiler, ...)."""
    try:
        with torch.inference_mode():
            for rows in (2, 1):
                generator = torch.Generator().manual_seed(rows)
                gate, up = (torch.randn((rows, 3, width), generator=generator).to(device=device, dtype=dtype) for _ in range(2))
                compiled = compiled_swiglu()(gate, up)
                if not torch.allclose(compiled.float(), swiglu(gate, up).float(), rtol=1e-2, atol=1e-2):
                    return "the compiled SwiGLU gives another result than the eager one"
    except Exception as error:  # noqa: BLE001 - any failure to compile means: stay eager
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"{type(error).__name__}: {first_line}"
    return None


def compile_mlps(model: torch.nn.Module) -> int:
    """Replace the forward of every gated MLP of ``model`` that computes
    ``down(silu(gate(x)) * up(x))`` by the same with a compiled SwiGLU; return how many were
    replaced. Compiles once first (``try_compile``); if that fails, logs a warning naming the
    error and replaces none. Idempotent."""
    agrees: dict[type, bool] = {}
    chosen: list[torch.nn.Module] = []
    already = 0
    for module in model.modules():
        if getattr(module, _MARK, False):
            already += 1
            continue
        if not _looks_like_gated_mlp(module):
            continue
        kind = type(module)
        if kind not in agrees:
            agrees[kind] = _same_as_own_forward(module)
            if not agrees[kind]:
                logger.info("%s computes another formula than down(silu(gate(x)) * up(x)); left eager", kind.__name__)
        if agrees[kind]:
            chosen.append(module)
    if not chosen:
        return already
    first = cast(torch.nn.Linear, chosen[0].gate_proj)
    failure = try_compile(first.out_features, device=first.weight.device, dtype=first.weight.dtype)
    if failure is not None:
        logger.warning("torch.compile of SwiGLU does not work here (%s); the MLPs stay eager", failure)
        return already
    for module in chosen:
        module.forward = types.MethodType(_compiled_forward, module)
        setattr(module, _MARK, True)
    return already + len(chosen)


def restore_mlps(model: torch.nn.Module) -> int:
    """Undo ``compile_mlps``: every replaced MLP runs its own ``forward`` again; return how many."""
    restored = 0
    for module in model.modules():
        if getattr(module, _MARK, False):
            del module.forward
            delattr(module, _MARK)
            restored += 1
    return restored


def compiled_mlp_count(model: torch.nn.Module) -> int:
    """How many of ``model``'s MLPs run the compiled SwiGLU now."""
    return sum(1 for module in model.modules() if getattr(module, _MARK, False))


def _compiled_forward(module: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    gate, up, down = (cast(torch.nn.Module, getattr(module, name)) for name in ("gate_proj", "up_proj", "down_proj"))
    return cast(torch.Tensor, down(compiled_swiglu()(gate(hidden), up(hidden))))


def _formula(module: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    gate, up, down = (cast(torch.nn.Module, getattr(module, name)) for name in ("gate_proj", "up_proj", "down_proj"))
    return cast(torch.Tensor, down(swiglu(gate(hidden), up(hidden))))


def _looks_like_gated_mlp(module: torch.nn.Module) -> bool:
    return all(isinstance(getattr(module, name, None), torch.nn.Linear) for name in ("gate_proj", "up_proj", "down_proj"))


def _same_as_own_forward(module: torch.nn.Module) -> bool:
    """Whether a float32 copy of ``module`` gives the same output through the SwiGLU formula as
    through its own ``forward`` (random input; eager, so this check compiles nothing)."""
    probe = copy.deepcopy(module).to(device="cpu", dtype=torch.float32)
    in_features = cast(torch.nn.Linear, probe.gate_proj).in_features
    hidden = torch.randn((2, 3, in_features), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        own = type(probe).forward(probe, hidden)
        ours = _formula(probe, hidden)
    return isinstance(own, torch.Tensor) and own.shape == ours.shape and bool(torch.allclose(own, ours, rtol=1e-4, atol=1e-5))
