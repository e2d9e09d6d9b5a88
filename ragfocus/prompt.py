"""Build the ranking prompt and locate passages and query in tokens.

The prompt follows ICR (Chen et al., ICLR 2025): an instruction and the passages form a
prefix shared by the real query and the content-free calibration query ("N/A"); each query
then comes in its own suffix. Spans are read from the tokenizer's offset mapping, never by
counting tokens by hand.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from ragfocus.tokens import encode_batch

PREFIX_HEADER = "Here are some paragraphs:\n\n"
PASSAGE_TEMPLATE = "[{number}] {text}\n\n"
SUFFIX_TEMPLATE = (
    "Please find information that is relevant to the following query in the paragraphs above.\n\nQuery: {query}"
)
CONTENT_FREE_QUERY = "N/A"
SORT_SUFFIX_TEMPLATE = "Answer the question using the paragraphs above.\n\nQuestion: {query}\nAnswer:"
"""The attention-sorting suffix (Peysakhovich & Lerer, 2023): the model is asked for the answer
and the attention of the position that would produce its first token is read."""


@dataclass(frozen=True)
class TokenizedPrompt:
    """Token ids of the shared prefix and of each suffix, with spans as [start, end) token ranges."""

    prefix_ids: list[int]
    passage_spans: list[tuple[int, int]]
    """Per passage, its tokens in the prefix (empty range for an empty passage)."""
    query_ids: list[int]
    query_rows: tuple[int, int]
    null_ids: list[int]
    null_rows: tuple[int, int]
    sort_ids: list[int]
    """The attention-sorting suffix; its last token's row is the one read."""
    prefix_offsets: list[tuple[int, int]]
    """Character range of every prefix token in ``prefix_text`` (empty for special tokens)."""
    passage_chars: list[tuple[int, int]]
    """Character range of each passage's text in ``prefix_text``."""
    prefix_text: str

    @property
    def sort_rows(self) -> tuple[int, int]:
        return (len(self.sort_ids) - 1, len(self.sort_ids))

    @property
    def total_tokens(self) -> int:
        return len(self.prefix_ids) + max(len(self.query_ids), len(self.null_ids), len(self.sort_ids))


def build_prompt(tokenizer: object, query: str, texts: Sequence[str]) -> TokenizedPrompt:
    """Tokenize the ranking prompt for ``query`` over ``texts``.

    The prefix is tokenized with the tokenizer's special tokens (a BOS where the model uses
    one), the suffixes without.
    """
    return build_prompts(tokenizer, [(query, texts)])[0]


def build_prompts(tokenizer: object, requests: Sequence[tuple[str, Sequence[str]]]) -> list[TokenizedPrompt]:
    """``build_prompt`` for many ``(query, texts)`` pairs, each kind of text tokenized in one
    call (a fast tokenizer encodes a batch in parallel)."""
    if not requests:
        return []
    prefixes: list[tuple[str, list[tuple[int, int]]]] = [_prefix_text(texts) for _, texts in requests]
    encoded_prefixes = encode_batch(tokenizer, [text for text, _ in prefixes], special=True)
    queries = [query for query, _ in requests]
    encoded_queries = encode_batch(tokenizer, [SUFFIX_TEMPLATE.format(query=query) for query in queries], special=False)
    null_ids, null_rows = _encode_suffix(tokenizer, CONTENT_FREE_QUERY)
    sorts = encode_batch(tokenizer, [SORT_SUFFIX_TEMPLATE.format(query=query) for query in queries], special=False)
    prompts = []
    for (prefix_text, char_spans), (prefix_ids, prefix_offsets), query, (query_ids, query_offsets), (sort_ids, _) in zip(
        prefixes, encoded_prefixes, queries, encoded_queries, sorts
    ):
        text = SUFFIX_TEMPLATE.format(query=query)
        start = text.rindex(query)
        query_rows = _token_span(query_offsets, (start, start + len(query)))
        if query_rows[0] == query_rows[1]:
            raise ValueError(f"the query {query!r} produced no tokens")
        prompts.append(
            TokenizedPrompt(
                prefix_ids, _token_spans(prefix_offsets, char_spans), query_ids, query_rows, list(null_ids), null_rows,
                sort_ids=sort_ids,
                prefix_offsets=prefix_offsets,
                passage_chars=char_spans,
                prefix_text=prefix_text,
            )
        )
    return prompts


def _prefix_text(texts: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The prefix (header and numbered passages) and each passage's character range in it."""
    pieces = [PREFIX_HEADER]
    char_spans: list[tuple[int, int]] = []
    cursor = len(PREFIX_HEADER)
    for number, text in enumerate(texts, start=1):
        block = PASSAGE_TEMPLATE.format(number=number, text=text)
        start = cursor + block.index(text) if text else cursor
        char_spans.append((start, start + len(text)))
        pieces.append(block)
        cursor += len(block)
    return "".join(pieces), char_spans


def token_span(offsets: Sequence[tuple[int, int]], chars: tuple[int, int]) -> tuple[int, int]:
    """Tokens whose characters overlap ``chars`` (a [start, end) character range)."""
    return _token_span(offsets, chars)


def _encode_suffix(tokenizer: object, query: str) -> tuple[list[int], tuple[int, int]]:
    text = SUFFIX_TEMPLATE.format(query=query)
    start = text.rindex(query)
    ((ids, offsets),) = encode_batch(tokenizer, [text], special=False)
    rows = _token_span(offsets, (start, start + len(query)))
    if rows[0] == rows[1]:
        raise ValueError(f"the query {query!r} produced no tokens")
    return ids, rows


def _token_spans(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``_token_span`` of each character range, by binary search when the tokens' offsets
    run forward (as a prefix's do), else range by range."""
    starts = [start for start, _ in offsets]
    ends = [end for _, end in offsets]
    if any(a > b for a, b in pairwise(starts)) or any(a > b for a, b in pairwise(ends)):
        return [_token_span(offsets, span) for span in spans]
    found = []
    for first, last in spans:
        low = bisect_right(ends, first)  # the first token ending after ``first``
        high = bisect_left(starts, last)  # the first token starting at or after ``last``
        real = (i for i in range(low, high) if ends[i] > starts[i])  # special tokens never count
        start = next(real, None)
        if start is None:
            found.append((0, 0))
            continue
        end = next(i for i in range(high - 1, start - 1, -1) if ends[i] > starts[i])
        found.append((start, end + 1))
    return found


def _token_span(offsets: Sequence[tuple[int, int]], chars: tuple[int, int]) -> tuple[int, int]:
    """Tokens whose characters overlap ``chars``; special tokens (empty offsets) never do."""
    first, last = chars
    inside = [i for i, (start, end) in enumerate(offsets) if end > start and start < last and end > first]
    return (inside[0], inside[-1] + 1) if inside else (0, 0)
