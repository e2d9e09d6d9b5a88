"""Fit any number of passages into the scorer's context: parts of over-long passages, windows.

A ranking prompt (instruction, passages, query) must fit the scoring model's context
(SmolLM2-135M: 8,192 positions). When it does not, the passages are packed, in input order,
into windows that each fit together with the same instruction and query; every window is
scored on its own (its own content-free calibration pass) and the scores are put on one
scale across windows before they are fused and ranked as a whole (see
``Focuser`` and ``rescale_attention``). A single passage too long for a window with the
query is cut into parts at sentence boundaries (pysbd; a sentence that alone is too long is
cut between tokens): each part is scored as a passage of its own and the passage takes the
score of its best part, with every part reported. Nothing is truncated.

The windowed scheme follows the sliding/partitioned re-ranking of long candidate lists in
LLM rankers (e.g. RankGPT, Sun et al., EMNLP 2023), with ICR's calibration (Chen et al.,
ICLR 2025) run per window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ragfocus.prompt import PASSAGE_TEMPLATE, TokenizedPrompt, build_prompt
from ragfocus.sentences import split_sentences

SLACK_TOKENS = 4
"""Tokens added to each passage's own count when packing, for the "[n] " marker and the blank
line around it (they can merge differently at passage boundaries); every window's real prompt
is tokenized and checked afterwards."""

DEFAULT_WINDOW_TOKENS = 2048
"""Window size past the model's context (``Focuser(window_tokens=...)``): on pooled HotpotQA
dev 2500-2519 (200 paragraphs), 2,048-token windows put both gold paragraphs in the top 10 for
0.80 of the questions against 0.55 for 8,192-token ones (research/tune_windows.py)."""

DEFAULT_FINAL_ROUND = 20
"""Passages scored again together after a windowed ranking (``Focuser(final_round=...)``)."""


@dataclass(frozen=True)
class Unit:
    """What the model scores: a whole passage or one part of an over-long passage."""

    item: int
    """Index of the passage (in the list being scored)."""
    start: int
    end: int
    """[start, end) characters of the passage text."""
    text: str


@dataclass(frozen=True)
class WindowPlan:
    units: list[Unit]
    windows: list[list[int]]
    """Per window, the indices into ``units`` it holds, in input order."""
    overhead: int | None
    """Tokens of the prompt without any passage (instruction, query, special tokens); ``None``
    without a limit (nothing is packed, so it is not counted)."""


def plan_windows(
    tokenizer: object, query: str, texts: Sequence[str], limit: int | None
) -> WindowPlan:
    """Cut ``texts`` into units and pack the units into windows of at most ``limit`` prompt
    tokens (``None``: no limit, one window).

    Raises:
        ValueError: the query with the instruction alone leaves no room for a passage.
    """
    if limit is None:
        units = [Unit(item, 0, len(text), text) for item, text in enumerate(texts)]
        return WindowPlan(units, [list(range(len(units)))] if units else [], None)
    overhead = build_prompt(tokenizer, query, []).total_tokens
    room = limit - overhead - SLACK_TOKENS
    if room < 16:
        raise ValueError(
            f"the query takes {overhead} tokens (instruction included) and a scoring window holds {limit}: "
            "no room is left for a passage; shorten the query"
        )
    counts = _token_counts(tokenizer, texts)
    units: list[Unit] = []
    sizes: list[int] = []
    for item, (text, size) in enumerate(zip(texts, counts)):
        if size <= room:
            units.append(Unit(item, 0, len(text), text))
            sizes.append(size)
            continue
        for start, end in split_long_text(tokenizer, text, room):
            units.append(Unit(item, start, end, text[start:end]))
            sizes.append(_token_counts(tokenizer, [text[start:end]])[0])
    return WindowPlan(units, _pack(sizes, room + SLACK_TOKENS), overhead)


def checked_prompts(
    plan: WindowPlan, build: Callable[[list[str]], TokenizedPrompt], limit: int | None
) -> list[tuple[list[int], TokenizedPrompt]]:
    """Each window's unit indices with its tokenized prompt; a window whose real prompt is
    over ``limit`` (tokenization merged differently than counted) is halved until it fits."""
    done: list[tuple[list[int], TokenizedPrompt]] = []
    pending = [list(window) for window in reversed(plan.windows)]
    while pending:
        window = pending.pop()
        prompt = build([plan.units[index].text for index in window])
        if limit is None or prompt.total_tokens <= limit:
            done.append((window, prompt))
            continue
        if len(window) == 1:  # parts are cut with room to spare: a bug if it happens
            raise RuntimeError(f"a {prompt.total_tokens}-token window of one passage part is over {limit} tokens")
        half = len(window) // 2
        pending.extend([window[half:], window[:half]])
    return done


def split_long_text(tokenizer: object, text: str, max_tokens: int) -> list[tuple[int, int]]:
    """Character ranges covering ``text`` in order, each at most ``max_tokens`` tokens: whole
    sentences packed together; a sentence longer than that is cut between tokens."""
    ranges: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    current_tokens = 0
    for sentence in split_sentences(text):
        size = _token_counts(tokenizer, [sentence.text])[0] + 1
        if size > max_tokens:
            if current is not None:
                ranges.append(current)
                current, current_tokens = None, 0
            ranges.extend(_cut_by_tokens(tokenizer, text, sentence.start, sentence.end, max_tokens))
            continue
        if current is not None and current_tokens + size <= max_tokens:
            current, current_tokens = (current[0], sentence.end), current_tokens + size
        else:
            if current is not None:
                ranges.append(current)
            current, current_tokens = (sentence.start, sentence.end), size
    if current is not None:
        ranges.append(current)
    return _cover(ranges, len(text))


def _cut_by_tokens(tokenizer: object, text: str, start: int, end: int, max_tokens: int) -> list[tuple[int, int]]:
    encoded = tokenizer(text[start:end], add_special_tokens=False, return_offsets_mapping=True)  # type: ignore[operator]
    offsets = [(start + a, start + b) for a, b in encoded["offset_mapping"]]
    step = max(1, max_tokens - 2 * SLACK_TOKENS)  # the "[n] " marker, and a token more at each edge
    pieces = []
    for first in range(0, len(offsets), step):
        chunk = offsets[first : first + step]
        pieces.append((chunk[0][0], chunk[-1][1]))
    return pieces


def _cover(ranges: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """Stretch the ranges so that together they cover every character (the whitespace between
    sentences goes with the part before it): nothing of the passage is left unscored."""
    if not ranges:
        return [(0, length)]
    covered = []
    for number, (start, _) in enumerate(ranges):
        begin = 0 if number == 0 else start
        stop = ranges[number + 1][0] if number + 1 < len(ranges) else length
        covered.append((begin, stop))
    return covered


def _pack(sizes: Sequence[int], room: int) -> list[list[int]]:
    windows: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, size in enumerate(sizes):
        cost = size + SLACK_TOKENS
        if current and used + cost > room:
            windows.append(current)
            current, used = [], 0
        current.append(index)
        used += cost
    if current:
        windows.append(current)
    return windows


def _token_counts(tokenizer: object, texts: Sequence[str]) -> list[int]:
    if not texts:
        return []
    encoded = tokenizer([PASSAGE_TEMPLATE.format(number=0, text=text) for text in texts], add_special_tokens=False)  # type: ignore[operator]
    return [len(ids) for ids in encoded["input_ids"]]


def check_window_tokens(window_tokens: object, max_positions: int | None) -> int | None:
    """``window_tokens`` checked against the model's context (``None`` passes)."""
    if window_tokens is None:
        return None
    if isinstance(window_tokens, bool) or not isinstance(window_tokens, int):
        raise TypeError(f"window_tokens must be an int, got {window_tokens!r}")
    if window_tokens < 64:
        raise ValueError(f"window_tokens must be at least 64, got {window_tokens}")
    if max_positions is not None and window_tokens > max_positions:
        raise ValueError(f"window_tokens={window_tokens} is more than the model reads ({max_positions} positions)")
    return window_tokens


def window_limits(window_tokens: object, max_positions: int | None) -> tuple[int | None, int | None]:
    """``(prompt_tokens, window_tokens)`` of ``Focuser(window_tokens=...)``: the most tokens of
    a prompt scored in one piece, and the size of a window past it. Default (``None``): the
    model's context, and ``DEFAULT_WINDOW_TOKENS`` windows past it."""
    window = check_window_tokens(window_tokens, max_positions)
    if window is not None:
        return window, window
    return max_positions, None if max_positions is None else min(DEFAULT_WINDOW_TOKENS, max_positions)
