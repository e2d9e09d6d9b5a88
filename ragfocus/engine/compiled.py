"""The model's unfused elementwise work under ``torch.compile``: SwiGLU and the rotary embedding.

Two parts of a Llama-family layer (Llama, Qwen2, Mistral, SmolLM2) run as chains of small
elementwise kernels in eager PyTorch, each launched from Python and each reading and writing a
whole activation:

- the gated MLP's ``silu(gate) * up`` (SwiGLU; Shazeer, 2020, "GLU Variants Improve
  Transformer"): two kernels over the ``intermediate_size`` activation;
- the rotary position embedding (RoPE; Su et al., 2021, "RoFormer"), transformers'
  ``apply_rotary_pos_emb``: ``q * cos + rotate_half(q) * sin`` and the same for ``k``, ten
  kernels (a negation, a concatenation, two products and a sum for each).

``torch.compile(dynamic=True)`` (Inductor; Triton on CUDA, C++ on CPU) makes each one
generated kernel, and one graph serves every batch shape. The projections, the norms and the
attention stay as they are. With the embedded model in float16 on a GPU, both together
measured faster for the bare forward over every prompt ``rank_many`` reads and for
``Focuser.rank_many`` in ``ragfocus bench``, though one probe showed no gain; SwiGLU alone
did not speed the bare forward (``scripts/gpu/compile_probe.py``; figures in ``docs/gpu.md``):
on a small model the host's kernel launches are what the GPU waits for.

How each is swapped in, without touching transformers' globals:

- an MLP's ``forward`` is replaced (an instance attribute) once a float32 copy of it gives, on
  random input, the same output through ``down(silu(gate(x)) * up(x))`` as through its own;
- an attention module's ``forward`` is replaced by a copy of its class's own ``forward``
  function whose globals name the compiled ``apply_rotary_pos_emb`` (same code, same
  transformers version); only a plain function that calls a global ``apply_rotary_pos_emb``
  qualifies.

Both compile once when swapped in, on a padded batch and on one packed row, and are compared
with the eager function there: if compiling fails (no Triton, no compiler), a warning names
the error and the modules stay as they are; nothing is lost but the speed.
``restore_elementwise`` gives the model back exactly as it was.
"""

from __future__ import annotations

import copy
import functools
import logging
import types
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

_MLP_MARK = "_ragfocus_compiled_mlp"
_ROTARY_MARK = "_ragfocus_compiled_rotary"
_ROTARY = "apply_rotary_pos_emb"
"""The global name transformers' Llama-family attention calls for the rotary embedding."""


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up``, the SwiGLU gate (Shazeer, 2020), in eager PyTorch."""
    return F.silu(gate) * up


@functools.cache
def compiled(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` under ``torch.compile(dynamic=True)``, one per function for the process,
    so every model and module that uses it shares its graphs."""
    return cast(Callable[..., Any], torch.compile(function, dynamic=True))


def compile_elementwise(model: torch.nn.Module) -> int:
    """``compile_mlps`` and ``compile_rotary``: return how many modules run compiled code now."""
    return compile_mlps(model) + compile_rotary(model)


def restore_elementwise(model: torch.nn.Module) -> int:
    """Undo ``compile_elementwise``: every replaced module runs its own ``forward`` again;
    return how many."""
    restored = 0
    for module in model.modules():
        for mark in (_MLP_MARK, _ROTARY_MARK):
            if getattr(module, mark, False):
                del module.forward
                delattr(module, mark)
                restored += 1
    return restored


def compiled_module_count(model: torch.nn.Module) -> int:
    """How many of ``model``'s modules (MLPs and attention modules) run compiled code now."""
    return sum(1 for module in model.modules() if getattr(module, _MLP_MARK, False) or getattr(module, _ROTARY_MARK, False))


def compile_mlps(model: torch.nn.Module) -> int:
    """Replace the forward of every gated MLP of ``model`` that computes
    ``down(silu(gate(x)) * up(x))`` by the same with a compiled SwiGLU; return how many run it
    now. Compiles once first; if that fails, logs a warning naming the error and replaces none.
    Idempotent."""
    agrees: dict[type, bool] = {}
    chosen: list[torch.nn.Module] = []
    already = 0
    for module in model.modules():
        if getattr(module, _MLP_MARK, False):
            already += 1
        elif _looks_like_gated_mlp(module):
            kind = type(module)
            if kind not in agrees:
                agrees[kind] = _mlp_formula_agrees(module)
                if not agrees[kind]:
                    logger.info("%s computes another formula than down(silu(gate(x)) * up(x)); left eager", kind.__name__)
            if agrees[kind]:
                chosen.append(module)
    if not chosen:
        return already
    gate = cast(torch.nn.Linear, chosen[0].gate_proj)
    width, device, dtype = gate.out_features, gate.weight.device, gate.weight.dtype
    failure = try_compile(swiglu, lambda rows, generator: tuple(
        torch.randn((rows, 3, width), generator=generator).to(device=device, dtype=dtype) for _ in range(2)
    ))
    if failure is not None:
        logger.warning("torch.compile of SwiGLU does not work here (%s); the MLPs stay eager", failure)
        return already
    for module in chosen:
        module.forward = types.MethodType(_compiled_mlp_forward, module)
        setattr(module, _MLP_MARK, True)
    return already + len(chosen)


def compile_rotary(model: torch.nn.Module) -> int:
    """Replace the forward of every attention module of ``model`` whose class's ``forward``
    calls a global ``apply_rotary_pos_emb`` by the same code calling that function compiled;
    return how many run it now. Compiles once per rotary function first; if that fails, logs a
    warning naming the error and replaces none of its modules. Idempotent."""
    forwards: dict[type, types.FunctionType | None] = {}
    count = 0
    for module in model.modules():
        if getattr(module, _ROTARY_MARK, False):
            count += 1
            continue
        kind = type(module)
        if kind not in forwards:
            forwards[kind] = _forward_with_compiled_rotary(module)
        forward = forwards[kind]
        if forward is not None:
            module.forward = types.MethodType(forward, module)
            setattr(module, _ROTARY_MARK, True)
            count += 1
    return count


def try_compile(function: Callable[..., Any], inputs: Callable[[int, torch.Generator], Sequence[torch.Tensor]]) -> str | None:
    """Run ``compiled(function)`` on ``inputs(rows, generator)`` for a padded batch (2 rows)
    and one packed row (a leading 1 is a shape class of its own), under
    ``torch.inference_mode`` as ragfocus runs the model, and compare with ``function``; return
    ``None``, or what shows that compiling does not work here (no Triton, no C++ compiler...)."""
    try:
        with torch.inference_mode():
            for rows in (2, 1):
                arguments = inputs(rows, torch.Generator().manual_seed(rows))
                eager, fast = _as_tuple(function(*arguments)), _as_tuple(compiled(function)(*arguments))
                if len(eager) != len(fast) or not all(
                    torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-2) for a, b in zip(eager, fast)
                ):
                    return f"compiled {getattr(function, '__name__', 'function')} gives another result than the eager one"
    except Exception as error:  # noqa: BLE001 - any failure to compile means: stay eager
        text = str(error).strip()
        return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
    return None


def _as_tuple(value: Any) -> tuple[torch.Tensor, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _compiled_mlp_forward(module: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    gate, up, down = (cast(torch.nn.Module, getattr(module, name)) for name in ("gate_proj", "up_proj", "down_proj"))
    return cast(torch.Tensor, down(compiled(swiglu)(gate(hidden), up(hidden))))


def _looks_like_gated_mlp(module: torch.nn.Module) -> bool:
    return all(isinstance(getattr(module, name, None), torch.nn.Linear) for name in ("gate_proj", "up_proj", "down_proj"))


def _mlp_formula_agrees(module: torch.nn.Module) -> bool:
    """Whether a float32 copy of ``module`` gives the same output through the SwiGLU formula as
    through its own ``forward`` (random input; eager, so this check compiles nothing)."""
    probe = copy.deepcopy(module).to(device="cpu", dtype=torch.float32)
    gate, up, down = (cast(torch.nn.Module, getattr(probe, name)) for name in ("gate_proj", "up_proj", "down_proj"))
    hidden = torch.randn((2, 3, cast(torch.nn.Linear, gate).in_features), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        own = type(probe).forward(probe, hidden)
        ours = down(swiglu(gate(hidden), up(hidden)))
    return isinstance(own, torch.Tensor) and own.shape == ours.shape and bool(torch.allclose(own, ours, rtol=1e-4, atol=1e-5))


def _forward_with_compiled_rotary(module: torch.nn.Module) -> types.FunctionType | None:
    """A copy of ``type(module).forward`` whose global ``apply_rotary_pos_emb`` is the compiled
    one, or ``None`` when the class does not qualify or compiling fails."""
    forward = getattr(type(module), "forward", None)
    if not isinstance(forward, types.FunctionType) or hasattr(forward, "__wrapped__") or _ROTARY not in forward.__code__.co_names:
        return None
    rotary = forward.__globals__.get(_ROTARY)
    shapes = _attention_shapes(module)
    if not isinstance(rotary, types.FunctionType) or shapes is None:
        return None
    heads, kv_heads, head_dim, device, dtype = shapes

    def inputs(rows: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        # q and k as the attention makes them: (rows, tokens, heads, head_dim) viewed as (rows, heads, tokens, head_dim)
        def tensor(*size: int) -> torch.Tensor:
            return torch.randn(size, generator=generator).to(device=device, dtype=dtype)
        query, key = tensor(rows, 3, heads, head_dim).transpose(1, 2), tensor(rows, 3, kv_heads, head_dim).transpose(1, 2)
        return query, key, tensor(rows, 3, head_dim), tensor(rows, 3, head_dim)

    failure = try_compile(rotary, inputs)
    if failure is not None:
        logger.warning("torch.compile of %s does not work here (%s); %s stays eager", _ROTARY, failure, type(module).__name__)
        return None
    namespace = dict(forward.__globals__)
    namespace[_ROTARY] = compiled(rotary)
    copied = types.FunctionType(forward.__code__, namespace, forward.__name__, forward.__defaults__, forward.__closure__)
    copied.__kwdefaults__ = forward.__kwdefaults__
    copied.__qualname__, copied.__doc__ = forward.__qualname__, forward.__doc__
    return copied


def _attention_shapes(module: torch.nn.Module) -> tuple[int, int, int, torch.device, torch.dtype] | None:
    """Query heads, key/value heads, head size, device and dtype of a Llama-style attention
    module (``q_proj``/``k_proj`` and ``head_dim``), or ``None``."""
    q_proj, k_proj, head_dim = getattr(module, "q_proj", None), getattr(module, "k_proj", None), getattr(module, "head_dim", None)
    if not isinstance(q_proj, torch.nn.Linear) or not isinstance(k_proj, torch.nn.Linear) or not isinstance(head_dim, int):
        return None
    if head_dim <= 0 or q_proj.out_features % head_dim or k_proj.out_features % head_dim:
        return None
    return q_proj.out_features // head_dim, k_proj.out_features // head_dim, head_dim, q_proj.weight.device, q_proj.weight.dtype
