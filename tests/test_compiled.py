"""Compiled SwiGLU (``ragfocus.engine.compiled``): same outputs, only for MLPs of the SwiGLU
formula, reversible, eager when compiling fails, and the same rankings with the real default
model. Runs ``torch.compile`` on the CPU (Inductor's C++ backend, a few seconds per shape)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from ragfocus import Focuser, LoadedModel, load_model
from ragfocus.engine import compiled
from ragfocus.engine.compiled import compile_mlps, compiled_mlp_count, restore_mlps, swiglu
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


def test_compiled_mlps_give_the_same_outputs_and_can_be_undone(tiny_model_dir: Path, tiny_model: LoadedModel) -> None:
    loaded = load_model(tiny_model_dir, device="cpu", compiled_mlps=True)
    layers = loaded.model.config.num_hidden_layers
    assert compiled_mlp_count(loaded.model) == layers
    assert compiled_mlp_count(tiny_model.model) == 0  # opt-in
    generator = torch.Generator().manual_seed(3)
    reference_ids = torch.randint(10, 1000, (2, 37), generator=generator)
    packed_ids = torch.randint(10, 1000, (1, 53), generator=generator)  # a leading 1: its own shape class
    for ids in (reference_ids, packed_ids):
        assert torch.allclose(_last_hidden(loaded, ids), _last_hidden(tiny_model, ids), rtol=1e-4, atol=1e-5)
    assert compile_mlps(loaded.model) == layers  # idempotent
    assert restore_mlps(loaded.model) == layers
    assert compiled_mlp_count(loaded.model) == 0
    assert all("forward" not in module.__dict__ for module in loaded.model.modules())
    assert torch.equal(_last_hidden(loaded, reference_ids), _last_hidden(tiny_model, reference_ids))


def test_an_mlp_of_another_formula_is_left_alone() -> None:
    model = torch.nn.Sequential(GeluGatedMLP(8))
    assert compile_mlps(model) == 0
    assert "forward" not in model[0].__dict__


def test_where_compiling_fails_the_mlps_stay_eager_with_a_warning(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_compiler() -> object:
        def fail(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("Cannot find a working triton installation")
        return fail

    monkeypatch.setattr(compiled, "compiled_swiglu", no_compiler)
    with caplog.at_level(logging.WARNING, logger="ragfocus.engine.compiled"):
        loaded = load_model(tiny_model_dir, device="cpu", compiled_mlps=True)
    assert compiled_mlp_count(loaded.model) == 0
    assert any("triton" in record.getMessage() and "stay eager" in record.getMessage() for record in caplog.records)


def test_swiglu_is_silu_times_up() -> None:
    gate, up = torch.tensor([-1.0, 0.0, 2.0]), torch.tensor([3.0, 5.0, 0.5])
    assert torch.allclose(swiglu(gate, up), gate * torch.sigmoid(gate) * up)


def test_compiled_mlps_rank_like_the_default_model(default_focuser: Focuser) -> None:
    """The real default model in float32 with compiled SwiGLU ranks two development questions
    with the same order and scores within 1e-4."""
    focuser = Focuser(load_model(compiled_mlps=True))
    assert compiled_mlp_count(focuser.loaded.model) == 30
    for question in hotpotqa(0, 2):
        paragraphs = question.paragraphs[:5]
        expected = default_focuser.rank(question.question, paragraphs)
        found = focuser.rank(question.question, paragraphs)
        assert [item.index for item in found] == [item.index for item in expected]
        assert [item.score for item in found] == pytest.approx([item.score for item in expected], abs=1e-4)


def test_bench_reports_the_compiled_mlps(tiny_model_dir: Path) -> None:
    focuser = Focuser(load_model(tiny_model_dir, device="cpu", compiled_mlps=True), distraction=False)
    report = run_bench(focuser, hotpotqa(0, 2), batch_size=2)
    assert report.compiled_mlps == focuser.loaded.model.config.num_hidden_layers
