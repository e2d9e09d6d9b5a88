"""``token_counter``: real tokenizers, tiktoken-style encoders and plain callables."""

from __future__ import annotations

from typing import Any

import pytest
from _tokenizers import smollm2_tokenizer

from ragfocus.tokens import token_counter


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    return smollm2_tokenizer()


class TiktokenLike:
    """Like ``tiktoken.Encoding``: ``encode`` takes keyword-only options, none named add_special_tokens."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def encode(self, text: str, *, allowed_special: Any = (), disallowed_special: Any = "all") -> list[int]:
        self.calls.append((text, {"allowed_special": allowed_special}))
        return list(text.encode("utf-8"))  # one token per byte


class WithSpecialTokens:
    """A Hugging Face-style tokenizer that adds a BOS token unless told not to."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [ord(character) for character in text]
        return [0, *ids] if add_special_tokens else ids


def test_hugging_face_tokenizer(tokenizer: Any) -> None:
    count = token_counter(tokenizer)
    assert count("hello world") == 2
    text = "Paris is the capital of France. It lies on the Seine."
    assert count(text) == len(tokenizer.tokenize(text))
    assert count(text + " " + text) > count(text)


def test_hugging_face_tokenizer_by_path(tokenizer: Any) -> None:
    count = token_counter(tokenizer.name_or_path)
    assert count("hello world") == token_counter(tokenizer)("hello world") == 2


def test_special_tokens_are_not_counted() -> None:
    count = token_counter(WithSpecialTokens())
    assert count("abc") == 3
    assert count("") == 0


def test_tiktoken_like_encoder() -> None:
    encoding = TiktokenLike()
    count = token_counter(encoding)
    assert count("abc") == 3
    assert count("é") == 2
    assert [text for text, _ in encoding.calls] == ["abc", "é"]


def test_plain_callable() -> None:
    count = token_counter(lambda text: len(text.split()))
    assert count("one two three") == 3
    assert count("") == 0


@pytest.mark.parametrize("bad_value", [-1, 2.5, "3", None, True])
def test_bad_callable_result_raises(bad_value: object) -> None:
    count = token_counter(lambda text: bad_value)
    with pytest.raises(TypeError, match="non-negative int"):
        count("some text")


@pytest.mark.parametrize("unsupported", [42, 3.5, None, object(), ["a", "b"]])
def test_unsupported_tokenizer_raises(unsupported: object) -> None:
    with pytest.raises(TypeError, match="tokenizer must be"):
        token_counter(unsupported)


def test_empty_string_counts_zero(tokenizer: Any) -> None:
    assert token_counter(tokenizer)("") == 0
    assert token_counter(TiktokenLike())("") == 0
