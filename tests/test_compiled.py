"""Compiled SwiGLU and rotary embedding (``ragfocus.engine.compiled``): same outputs, only for
modules of those formulas, reversible, eager when compiling fails, transformers' globals
untouched, and the same rankings with the real default model. Runs ``torch.compile`` on the
CPU (Inductor's C++ backend, a few seconds per shape class)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch
from transformers.models.llama import modeling_llama

from ragfocus import Focuser, LoadedModel, load_model
from ragfocus.engine import compiled
from ragfocus.engine.compiled import (
    compile_elementwise,
    compile_mlps,
    compile_rotary,
    compiled_module_count,
    restore_elementwise,
    swiglu,
)
from ragfocus.evaluation.bench import run_bench
from ragfocus.evaluation.datasets import hotpotqa


class GeluGatedMLP(torch.nn.Module):
    """GeGLU: the same three projections, another activation, which ``compile_mlps`` must not
    replace by SwiGLU."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.gate_proj = torch.nn.Linear(size, 2 * size, bias=False)
        self.up_proj = torch.nn.Linear(size, 2 * size, bias=False)
        self.down_proj = torch.nn.Linear(2 * size, size, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.down_proj(torch.nn.functional.gelu(self.gate_proj(hidden)) * self.up_proj(hidden))


def _last_hidden(loaded: LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return loaded.model.base_model(input_ids=ids, use_cache=False).last_hidden_state.float()


def test_compiled_modules_give_the_same_outputs_and_can_be_undone(tiny_model_dir: Path, tiny_model: LoadedModel) -> None:
    eager_rotary = modeling_llama.apply_rotary_pos_emb
    loaded = load_model(tiny_model_dir, device="cpu", compiled_elementwise=True)
    layers = loaded.model.config.num_hidden_layers
    assert compiled_module_count(loaded.model) == 2 * layers  # each layer's MLP and attention
    assert compiled_module_count(tiny_model.model) == 0  # the CPU default: eager
    assert modeling_llama.apply_rotary_pos_emb is eager_rotary  # transformers' global untouched
    generator = torch.Generator().manual_seed(3)
    padded_ids = torch.randint(10, 1000, (2, 37), generator=generator)
    packed_ids = torch.randint(10, 1000, (1, 53), generator=generator)  # a leading 1: its own shape class
    for ids in (padded_ids, packed_ids):
        assert torch.allclose(_last_hidden(loaded, ids), _last_hidden(tiny_model, ids), rtol=1e-4, atol=1e-5)
    assert compile_elementwise(loaded.model) == 2 * layers  # idempotent
    assert restore_elementwise(loaded.model) == 2 * layers
    assert compiled_module_count(loaded.model) == 0
    assert all("forward" not in module.__dict__ for module in loaded.model.modules())
    assert torch.equal(_last_hidden(loaded, padded_ids), _last_hidden(tiny_model, padded_ids))


def test_the_attention_copy_calls_the_compiled_rotary_and_nothing_else_changes(tiny_model: LoadedModel) -> None:
    model = copy.deepcopy(tiny_model.model)
    assert compile_rotary(model) == model.config.num_hidden_layers
    attention = model.base_model.layers[0].self_attn
    forward = attention.forward.__func__
    own = type(attention).forward
    assert forward is not own and forward.__code__ is own.__code__
    assert forward.__globals__["apply_rotary_pos_emb"] is compiled.compiled(own.__globals__["apply_rotary_pos_emb"])
    assert {name: value for name, value in forward.__globals__.items() if name != "apply_rotary_pos_emb"} == {
        name: value for name, value in own.__globals__.items() if name != "apply_rotary_pos_emb"
    }


def test_modules_of_other_formulas_are_left_alone() -> None:
    model = torch.nn.Sequential(GeluGatedMLP(8), torch.nn.MultiheadAttention(8, 2))
    assert compile_mlps(model) == 0 and compile_rotary(model) == 0
    assert all("forward" not in module.__dict__ for module in model)


def test_where_compiling_fails_the_modules_stay_eager_with_a_warning(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_compiler(function: object) -> object:
        def fail(*arguments: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("Cannot find a working triton installation")
        return fail

    monkeypatch.setattr(compiled, "compiled", no_compiler)
    with caplog.at_level(logging.WARNING, logger="ragfocus.engine.compiled"):
        loaded = load_model(tiny_model_dir, device="cpu", compiled_elementwise=True)
    assert compiled_module_count(loaded.model) == 0
    warnings = [record.getMessage() for record in caplog.records]
    assert any("SwiGLU" in message and "triton" in message and "stay eager" in message for message in warnings)
    assert any("apply_rotary_pos_emb" in message and "triton" in message and "stays eager" in message for message in warnings)


def test_swiglu_is_silu_times_up() -> None:
    gate, up = torch.tensor([-1.0, 0.0, 2.0]), torch.tensor([3.0, 5.0, 0.5])
    assert torch.allclose(swiglu(gate, up), gate * torch.sigmoid(gate) * up)


def test_compiled_modules_rank_like_the_default_model(default_focuser: Focuser) -> None:
    """The real default model in float32 with compiled SwiGLU and rotary embedding ranks two
    development questions with the same order and scores within 1e-4."""
    focuser = Focuser(load_model(compiled_elementwise=True))
    assert compiled_module_count(focuser.loaded.model) == 60
    for question in hotpotqa(0, 2):
        paragraphs = question.paragraphs[:5]
        expected = default_focuser.rank(question.question, paragraphs)
        found = focuser.rank(question.question, paragraphs)
        assert [item.index for item in found] == [item.index for item in expected]
        assert [item.score for item in found] == pytest.approx([item.score for item in expected], abs=1e-4)


def test_bench_reports_the_compiled_modules(tiny_model_dir: Path) -> None:
    focuser = Focuser(load_model(tiny_model_dir, device="cpu", compiled_elementwise=True), distraction=False)
    report = run_bench(focuser, hotpotqa(0, 2), batch_size=2)
    assert report.compiled_modules == 2 * focuser.loaded.model.config.num_hidden_layers
