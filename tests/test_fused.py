"""Fused RMSNorm (``ragfocus.engine.fused``): same outputs, only for norms of the Llama formula,
reversible, and the same rankings with the real default model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ragfocus import Focuser, LoadedModel, load_model
from ragfocus.engine.fused import fuse_norms, fused_norm_count, restore_norms, unfused_norms
from ragfocus.evaluation.bench import run_bench
from ragfocus.evaluation.datasets import hotpotqa


class OnePlusWeightRMSNorm(torch.nn.Module):
    """Gemma's formula: ``(1 + weight) * normalised``, which ``rms_norm`` does not compute."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(size))
        self.variance_epsilon = 1e-6

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        normalised = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return (1 + self.weight) * normalised


def _last_hidden(loaded: LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return loaded.model.base_model(input_ids=ids, use_cache=False).last_hidden_state.float()


def test_fused_norms_give_the_same_outputs_and_can_be_undone(tiny_model_dir: Path, tiny_model: LoadedModel) -> None:
    fused = load_model(tiny_model_dir, device="cpu", fused_norms=True)
    layers = fused.model.config.num_hidden_layers
    assert fused_norm_count(fused.model) == 2 * layers + 1  # two per layer and the final one
    assert fused_norm_count(tiny_model.model) == 0  # CPU default: transformers' own norms
    ids = torch.randint(10, 1000, (2, 37), generator=torch.Generator().manual_seed(1))
    reference = _last_hidden(tiny_model, ids)
    assert torch.allclose(_last_hidden(fused, ids), reference, rtol=1e-4, atol=1e-5)

    with unfused_norms(fused.model) as count:
        assert count == 2 * layers + 1 and fused_norm_count(fused.model) == 0
        assert all("forward" not in module.__dict__ for module in fused.model.modules())
    assert fused_norm_count(fused.model) == 2 * layers + 1
    assert fuse_norms(fused.model) == 2 * layers + 1  # idempotent
    assert restore_norms(fused.model) == 2 * layers + 1
    assert fused_norm_count(fused.model) == 0
    assert torch.equal(_last_hidden(fused, ids), reference)


def test_fused_norms_in_bfloat16_stay_as_close_to_float32(tiny_model_dir: Path, tiny_model: LoadedModel) -> None:
    """One rounding instead of two: in bf16 the fused norms are no further from float32 than
    transformers' own."""
    ids = torch.randint(10, 1000, (2, 29), generator=torch.Generator().manual_seed(2))
    reference = _last_hidden(tiny_model, ids)
    own = load_model(tiny_model_dir, device="cpu", dtype=torch.bfloat16, fused_norms=False)
    fused = load_model(tiny_model_dir, device="cpu", dtype=torch.bfloat16, fused_norms=True)
    own_error = float((_last_hidden(own, ids) - reference).abs().mean())
    fused_error = float((_last_hidden(fused, ids) - reference).abs().mean())
    assert 0 < fused_error <= own_error * 1.1


def test_a_norm_of_another_formula_is_left_alone() -> None:
    model = torch.nn.Sequential(OnePlusWeightRMSNorm(8))
    assert fuse_norms(model) == 0
    assert "forward" not in model[0].__dict__
    hidden = torch.randn(2, 8)
    assert torch.equal(model(hidden), OnePlusWeightRMSNorm.forward(model[0], hidden))


def test_fused_norms_rank_like_the_default_model(default_focuser: Focuser) -> None:
    """The real default model in float32 with fused norms ranks two development questions with
    the same order and scores within 1e-4."""
    fused = Focuser(load_model(fused_norms=True))
    assert fused_norm_count(fused.loaded.model) == 61
    for question in hotpotqa(0, 2):
        paragraphs = question.paragraphs[:5]
        expected = default_focuser.rank(question.question, paragraphs)
        found = fused.rank(question.question, paragraphs)
        assert [item.index for item in found] == [item.index for item in expected]
        assert [item.score for item in found] == pytest.approx([item.score for item in expected], abs=1e-4)


def test_bench_times_the_bare_forward_with_own_norms_when_norms_are_fused(tiny_model_dir: Path) -> None:
    focuser = Focuser(load_model(tiny_model_dir, device="cpu", fused_norms=True), distraction=False)
    report = run_bench(focuser, hotpotqa(0, 2), batch_size=2)
    assert [phase.name for phase in report.phases] == ["bare_forward", "rank_many", "bare_forward_own_norms"]
    assert report.fused_norms == 9
    assert report.rank_over_own_norms_forward is not None and report.rank_over_own_norms_forward > 0
    assert fused_norm_count(focuser.loaded.model) == 9  # fused again after the phase
