"""The real SmolLM2 tokenizer for unit tests, loaded once per test session (no model weights)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def smollm2_tokenizer() -> Any:
    """The embedded default model's tokenizer, read from its dequantized cache directory."""
    from transformers import AutoTokenizer

    from ragfocus import models

    gguf = models.default_gguf_path()
    directory = models._dequantized_default(gguf, models.file_sha256(gguf))
    return AutoTokenizer.from_pretrained(str(directory))
