"""Distraction: how strongly a passage pulls the model away from abstaining.

Amiraz et al., "The Distracting Effect: Understanding Irrelevant Passages in RAG" (ACL 2025):
the distracting effect of passage ``p`` for question ``q`` is

    DE(q, p) = 1 - P(the model abstains | q and p alone)

with the model told to answer from the passage or reply with a fixed abstain answer. The
abstain probability is the probability of the whole abstain answer, teacher-forced after the
chat template's assistant turn. A passage that answers the question also has a high DE (the
model answers instead of abstaining); a passage that is irrelevant to the question and still
has a high DE is a distractor. On CUDA the prompts run packed end to end, with no padding
(``ragfocus.engine.varlen``); elsewhere length-sorted, in right-padded chunks
(``length_chunks``).

Every distraction prompt opens with the same tokens (the chat template's system turn and the
instruction, 54 of a HotpotQA prompt's 233 with the default model). On CUDA those run once per
batch and their keys and values are shared by every prompt (``SharedPrefix``): causal
attention makes a prefix's keys and values independent of what follows, so only rounding
changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ragfocus.engine.capture import can_pack
from ragfocus.engine.kernels import PAD_MULTIPLE, HostCopy, batched_attention_kernels
from ragfocus.scoring.distraction_passes import (
    CHUNK_TOKENS,
    LENGTH_RATIO,
    MIN_SHARED_PREFIX,
    PACKED_TOKENS,
    SharedPrefix,
    common_prefix_length,
    length_chunks,
    packed_chunks,
    packed_logprobs,
    sequence_logprobs,
    shared_prefix,
)
from ragfocus.tokens import encode_batch

ABSTAIN_ANSWER = "NO ANSWER"
"""The fixed answer the model is told to give when the passage does not answer."""

INSTRUCTION = (
    "Answer the question using only the passage. If the passage does not contain the answer, "
    f"reply with exactly: {ABSTAIN_ANSWER}"
)
USER_TEMPLATE = "{instruction}\n\nPassage: {passage}\n\nQuestion: {question}"


@dataclass(frozen=True)
class DistractionScores:
    """Per passage: ``distraction`` = 1 - P(abstain) and ``abstain_logprob`` = log P(abstain)
    (the log keeps the resolution that ``1 - P`` loses when P is tiny)."""

    distraction: list[float]
    abstain_logprob: list[float]


def distraction_prompt_ids(tokenizer: object, question: str, passage: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt (chat template, generation turn opened) and of the abstain
    answer that follows it."""
    user = USER_TEMPLATE.format(instruction=INSTRUCTION, passage=passage, question=question)
    template = getattr(tokenizer, "chat_template", None)
    if template:
        text = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
        prompt = list(tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]
    else:
        prompt = list(tokenizer(f"{user}\n\nAnswer: ", add_special_tokens=True)["input_ids"])  # type: ignore[operator]
    answer = list(tokenizer(ABSTAIN_ANSWER, add_special_tokens=False)["input_ids"])  # type: ignore[operator]
    return prompt, answer


def distraction_prompt_ids_many(tokenizer: object, pairs: Sequence[tuple[str, str]]) -> tuple[list[list[int]], list[int]]:
    """``distraction_prompt_ids`` for many (question, passage) pairs in one tokenizer call: the
    chat template is rendered once around a marker and the texts are tokenized together."""
    answer = list(tokenizer(ABSTAIN_ANSWER, add_special_tokens=False)["input_ids"])  # type: ignore[operator]
    if not pairs:
        return [], answer
    users = [USER_TEMPLATE.format(instruction=INSTRUCTION, passage=passage, question=question) for question, passage in pairs]
    template = getattr(tokenizer, "chat_template", None)
    if template:
        marker = "\x00RAGFOCUS_USER\x00"
        rendered = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            [{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True
        )
        if rendered.count(marker) != 1:  # a template that transforms the content: render each
            return [distraction_prompt_ids(tokenizer, question, passage)[0] for question, passage in pairs], answer
        before, after = rendered.split(marker)
        texts, special = [before + user + after for user in users], False
    else:
        texts, special = [f"{user}\n\nAnswer: " for user in users], True
    return [ids for ids, _ in encode_batch(tokenizer, texts, special=special)], answer


@torch.inference_mode()
def distraction_scores(
    model: torch.nn.Module,
    tokenizer: object,
    question: str,
    passages: Sequence[str],
    *,
    batch_size: int = 16,
) -> DistractionScores:
    """DE(q, p) for each passage, each passage shown alone (Amiraz et al., ACL 2025).

    At most ``batch_size`` prompts run at a time, packed on CUDA after their shared prefix,
    right-padded elsewhere: ``launch_distraction``. Neither changes a score.
    """
    return score_distraction(model, tokenize_distraction(tokenizer, [(question, passages)]), batch_size=batch_size)[0]


@dataclass(frozen=True)
class DistractionPrompts:
    """The tokenized distraction prompts of many (question, passages) pairs
    (``tokenize_distraction``), ready for ``score_distraction``."""

    sequences: list[list[int]]
    """Prompt and abstain answer, one per (pair, passage), pairs in order."""
    answer_length: int
    passages: list[int]
    """How many passages each pair has."""


def tokenize_distraction(tokenizer: object, queries: Sequence[tuple[str, Sequence[str]]]) -> DistractionPrompts:
    """Every (question, passage) prompt of every pair, tokenized in one call (host work)."""
    pairs = [(question, passage) for question, passages in queries for passage in passages]
    prompts, answer = distraction_prompt_ids_many(tokenizer, pairs)
    return DistractionPrompts([prompt + answer for prompt in prompts], len(answer), [len(passages) for _, passages in queries])


@torch.inference_mode()
def score_distraction(model: torch.nn.Module, prompts: DistractionPrompts, *, batch_size: int = 64) -> list[DistractionScores]:
    """DE(q, p) of tokenized prompts: sorted by length and run ``batch_size`` at a time, so
    the padding stays small (device work; ``launch_distraction``, waited for)."""
    return launch_distraction(model, prompts, batch_size=batch_size).result()


@dataclass(frozen=True)
class PendingDistraction:
    """``launch_distraction``'s log-probabilities on their way to the host; ``result`` waits."""

    copy: HostCopy | None
    jobs: list[int]
    """The prompt of each value copied, in the order they were run."""
    passages: list[int]

    def result(self) -> list[DistractionScores]:
        values = self.copy.result().tolist() if self.copy is not None else []
        logprobs = [0.0] * len(values)
        for job, value in zip(self.jobs, values):
            logprobs[job] = value
        results = []
        start = 0
        for count in self.passages:
            found = logprobs[start : start + count]
            results.append(DistractionScores(distraction=[1.0 - math.exp(value) for value in found], abstain_logprob=found))
            start += count
        return results


@torch.inference_mode()
def launch_distraction(
    model: torch.nn.Module, prompts: DistractionPrompts, *, batch_size: int = 64, packed: bool | None = None
) -> PendingDistraction:
    """``score_distraction``'s device work, launched; the values are copied back to the host
    without waiting (``kernels.HostCopy``).

    At most ``batch_size`` prompts run at a time. Measured, the two devices want different
    things (``docs/gpu.md``, fifth and sixth sessions):

    - On CUDA (``packed=None``) the prompts run packed end to end (``_packed_logprob_tensor``,
      at most ``PACKED_TOKENS`` a pass) after their shared prefix, run once
      (``shared_prefix``): both the pass and ``rank_many`` measured faster than padded chunks
      with the shared prefix. Before, fixed-size chunks of the sorted prompts were padded
      to a multiple of ``PAD_MULTIPLE`` (1.47 padded tokens per real one); cutting them at
      longer prompts cost more host time per pass than it saved.
    - On a CPU the chunks of sorted prompts are cut at longer prompts (``length_chunks``)
      and widths are not rounded; neither the shared prefix nor packing paid there.

    ``packed=True`` packs on any device (one SDPA call per prompt off CUDA); a model that
    cannot pack (``can_pack``) runs the padded chunks.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    sequences = prompts.sequences
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    packed = (cuda if packed is None else packed) and can_pack(model)
    multiple = PAD_MULTIPLE if cuda else 1
    found = []
    with batched_attention_kernels(device):
        prefix = shared_prefix(model, sequences, keep=prompts.answer_length + 1) if cuda else None
        skipped = 0 if prefix is None else len(prefix.ids)
        lengths = [len(sequence) - skipped for sequence in sequences]
        if packed:
            chunks = packed_chunks(lengths, max_prompts=batch_size)
        elif cuda:  # fixed-size chunks of the sorted prompts: fewer passes beat less padding there
            chunks = length_chunks(lengths, max_prompts=batch_size, multiple=multiple, ratio=math.inf, max_tokens=math.inf)
        else:
            chunks = length_chunks(lengths, max_prompts=batch_size)
        for chunk in chunks:
            chunk_sequences = [sequences[job] for job in chunk]
            if packed:
                found.append(packed_logprobs(model, chunk_sequences, prompts.answer_length, prefix=prefix))
            else:
                found.append(
                    sequence_logprobs(model, chunk_sequences, prompts.answer_length, pad_multiple=multiple, prefix=prefix)
                )
    # One copy back to the host for all chunks: each blocking copy makes the host wait.
    copy = HostCopy(torch.cat(found)) if found else None
    return PendingDistraction(copy, [job for chunk in chunks for job in chunk], list(prompts.passages))


def distraction_scores_many(
    model: torch.nn.Module,
    tokenizer: object,
    queries: Sequence[tuple[str, Sequence[str]]],
    *,
    batch_size: int = 64,
) -> list[DistractionScores]:
    """``distraction_scores`` for many (question, passages) pairs: every (question, passage)
    prompt of every pair is sorted by length and run ``batch_size`` prompts at a time, so the
    padding stays small. Equal to ``distraction_scores`` pair by pair up to floating-point
    rounding."""
    return score_distraction(model, tokenize_distraction(tokenizer, queries), batch_size=batch_size)


__all__ = [
    "ABSTAIN_ANSWER",
    "CHUNK_TOKENS",
    "DistractionPrompts",
    "DistractionScores",
    "INSTRUCTION",
    "LENGTH_RATIO",
    "MIN_SHARED_PREFIX",
    "PACKED_TOKENS",
    "PendingDistraction",
    "SharedPrefix",
    "USER_TEMPLATE",
    "can_pack",
    "common_prefix_length",
    "distraction_prompt_ids",
    "distraction_prompt_ids_many",
    "distraction_scores",
    "distraction_scores_many",
    "launch_distraction",
    "length_chunks",
    "packed_chunks",
    "packed_logprobs",
    "score_distraction",
    "sequence_logprobs",
    "shared_prefix",
    "tokenize_distraction",
]
