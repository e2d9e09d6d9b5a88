"""Count tokens with the generator's tokenizer: budgets are counted, never estimated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TokenCounter = Callable[[str], int]


def token_counter(tokenizer: Any) -> TokenCounter:
    """A function ``str -> number of tokens`` for ``tokenizer``.

    Accepts a Hugging Face tokenizer (anything with ``encode``), a hub id or local path
    (loaded with ``AutoTokenizer``), a tiktoken-style encoding (``encode`` returning a list),
    or a plain callable that already counts tokens. Special tokens (BOS and the like) are
    not counted: they belong to the generator's prompt template, not to the context. The
    empty string is 0 tokens whatever the counter says (estimators may add one).
    """
    if isinstance(tokenizer, str):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    encode = getattr(tokenizer, "encode", None)
    if callable(encode):
        return _empty_is_zero(_encoder_counter(encode))
    if callable(tokenizer):
        return _empty_is_zero(_checked_callable(tokenizer))
    raise TypeError(
        f"tokenizer must be a Hugging Face tokenizer, a tokenizer name or path, or a callable str -> int; "
        f"got {type(tokenizer).__name__}"
    )


def _encoder_counter(encode: Callable[..., Any]) -> TokenCounter:
    def count(text: str) -> int:
        try:
            return len(encode(text, add_special_tokens=False))
        except TypeError:  # tiktoken and friends take no add_special_tokens
            return len(encode(text))

    return count


def _checked_callable(function: Callable[[str], Any]) -> TokenCounter:
    def count(text: str) -> int:
        value = function(text)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TypeError(f"the token counter returned {value!r}; it must return a non-negative int")
        return value

    return count


def _empty_is_zero(count: TokenCounter) -> TokenCounter:
    def counted(text: str) -> int:
        return count(text) if text else 0

    return counted
