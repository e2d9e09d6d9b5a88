"""Shared fixtures: the real default model, loaded once per session, and a tiny random model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ragfocus import Focuser, LoadedModel, load_model


@pytest.fixture(scope="session")
def default_model() -> LoadedModel:
    """The embedded SmolLM2-135M-Instruct, exactly as users get it."""
    return load_model()


@pytest.fixture(scope="session")
def default_focuser(default_model: LoadedModel) -> Focuser:
    return Focuser(default_model)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, default_model: LoadedModel) -> Path:
    """A randomly initialised 4-layer Llama with grouped-query attention (8 heads, 2 KV heads)
    and the default model's tokenizer, saved as a local model directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        vocab_size=len(default_model.tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=default_model.tokenizer.pad_token_id or 0,
    )
    generator = torch.Generator().manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    model.save_pretrained(directory)
    default_model.tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> LoadedModel:
    return load_model(tiny_model_dir, device="cpu")
