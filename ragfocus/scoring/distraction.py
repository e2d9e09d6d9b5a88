"""Distraction: how strongly a passage pulls the model away from abstaining.

Amiraz et al., "The Distracting Effect: Understanding Irrelevant Passages in RAG" (ACL 2025):
the distracting effect of passage ``p`` for question ``q`` is

    DE(q, p) = 1 - P(the model abstains | q and p alone)

with the model told to answer from the passage or reply with a fixed abstain answer. The
abstain probability is the probability of the whole abstain answer, teacher-forced after the
chat template's assistant turn. A passage that answers the question also has a high DE (the
model answers instead of abstaining); a passage that is irrelevant to the question and still
has a high DE is a distractor. All passages of a query run as one left-padded batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

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

    Passages run ``batch_size`` at a time, left-padded so that every abstain answer ends at
    the last position; position ids follow the attention mask, so padding changes nothing.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    logprobs: list[float] = []
    for first in range(0, len(passages), batch_size):
        chunk = passages[first : first + batch_size]
        logprobs.extend(_abstain_logprobs(model, tokenizer, question, chunk))
    return DistractionScores(
        distraction=[1.0 - math.exp(value) for value in logprobs],
        abstain_logprob=logprobs,
    )


def _abstain_logprobs(model: torch.nn.Module, tokenizer: object, question: str, passages: Sequence[str]) -> list[float]:
    device = next(model.parameters()).device
    sequences = []
    answer: list[int] = []
    for passage in passages:
        prompt, answer = distraction_prompt_ids(tokenizer, question, passage)
        sequences.append(prompt + answer)
    width = max(len(sequence) for sequence in sequences)
    pad = int(getattr(model.config, "pad_token_id", None) or 0)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long, device=device)
    mask = torch.zeros((len(sequences), width), dtype=torch.long, device=device)
    for row, sequence in enumerate(sequences):
        ids[row, width - len(sequence) :] = torch.tensor(sequence, device=device)
        mask[row, width - len(sequence) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    # Logits of the position before each answer token and of every answer token but the last.
    output = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=len(answer) + 1)
    logits = output.logits[:, :-1].float()
    targets = torch.tensor(answer, device=device).expand(len(sequences), -1)
    chosen = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
    return [float(value) for value in chosen.sum(dim=1).double()]
