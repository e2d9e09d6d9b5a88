"""Count tokens with the generator's tokenizer: budgets are counted, never estimated."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

TokenCounter = Callable[[str], int]

Encoded = tuple[list[int], list[tuple[int, int]]]
"""A text's token ids and each token's [start, end) character offsets."""


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


def encode_batch(tokenizer: Any, texts: Sequence[str], *, special: bool) -> list[Encoded]:
    """Token ids and character offsets of many texts, in one parallel tokenizer call.

    A Hugging Face fast tokenizer whose Rust backend has no truncation or padding set is
    called directly: it tokenizes without holding the GIL, and skipping ``transformers``'
    conversion of every encoding to Python lists (about a quarter of the tokenizing time)
    leaves more of the GIL to the thread that drives the GPU (``docs/gpu.md``). Any other
    tokenizer goes through its ``__call__``; both give the same ids and offsets
    (``tests/test_prompt.py``).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and getattr(backend, "truncation", None) is None and getattr(backend, "padding", None) is None:
        return [(encoding.ids, encoding.offsets) for encoding in backend.encode_batch(list(texts), add_special_tokens=special)]
    encoded = tokenizer(list(texts), add_special_tokens=special, return_offsets_mapping=True)
    return [
        (list(ids), [tuple(pair) for pair in offsets])
        for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"])
    ]
