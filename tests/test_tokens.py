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


def _through_transformers(tokenizer: Any, texts: list[str], *, special: bool) -> list[tuple[list[int], list[tuple[int, int]]]]:
    encoded = tokenizer(texts, add_special_tokens=special, return_offsets_mapping=True)
    return [(list(ids), [tuple(pair) for pair in offsets]) for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"])]


def test_encode_batch_equals_the_tokenizers_call(tokenizer: Any) -> None:
    """The direct call to the Rust backend gives what ``tokenizer(...)`` gives: ids and offsets,
    with and without special tokens, on ranking prefixes (dev questions) and odd text."""
    from ragfocus.evaluation.datasets import hotpotqa
    from ragfocus.prompt import _prefix_text
    from ragfocus.tokens import encode_batch

    texts = [_prefix_text(q.paragraphs)[0] for q in hotpotqa(10, 4)]
    texts += ["", " ", "naïve café — 東京 🙂\n\n\ttabs", "Query: who?"]
    assert getattr(tokenizer, "backend_tokenizer", None) is not None  # the direct path is the one tested
    for special in (True, False):
        assert encode_batch(tokenizer, texts, special=special) == _through_transformers(tokenizer, texts, special=special)


def test_encode_batch_leaves_a_configured_backend_to_transformers(tokenizer: Any) -> None:
    """A backend with truncation set (what ``transformers`` manages per call) is not called
    directly: the result is still the tokenizer's own."""
    import copy

    from ragfocus.tokens import encode_batch

    configured = copy.deepcopy(tokenizer)
    configured.backend_tokenizer.enable_truncation(max_length=3)
    texts = ["one two three four five six", "seven"]
    # Called directly, the backend would cut the first text to 3 tokens; ``transformers``
    # sets truncation per call (none here).
    assert encode_batch(configured, texts, special=False) == _through_transformers(tokenizer, texts, special=False)


def test_token_spans_equal_the_span_by_span_search(tokenizer: Any) -> None:
    from ragfocus.evaluation.datasets import hotpotqa
    from ragfocus.prompt import _prefix_text, _token_span, _token_spans
    from ragfocus.tokens import encode_batch

    for question in hotpotqa(20, 3):
        text, spans = _prefix_text([*question.paragraphs, ""])  # an empty passage: an empty span
        ((_, offsets),) = encode_batch(tokenizer, [text], special=True)
        assert _token_spans(offsets, spans) == [_token_span(offsets, span) for span in spans]
        assert _token_spans(offsets, spans)[-1] == (0, 0)
