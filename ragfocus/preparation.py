"""The host's share of a batch before the device: ranking prompts, distraction prompts, BM25.

Everything here needs only the tokenizer and the texts, never the model, so it can run in
another process (``ragfocus.preparation_process``) while the thread that drives the GPU keeps
the interpreter to itself (``docs/gpu.md``). ``prepare_inputs`` is the one function both the
in-thread and the out-of-process paths call, so they give the same result.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ragfocus.prompt import TokenizedPrompt, build_prompt, build_prompts
from ragfocus.scoring.distraction import DistractionPrompts, tokenize_distraction
from ragfocus.scoring.lexical import bm25_scores

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedInputs:
    """What ``prepare_inputs`` made of one batch of ``(query, texts)`` inputs."""

    prompts: list[TokenizedPrompt | Exception | None]
    """Per input: its ranking prompt, the error that kept it from being built, or ``None`` for
    an input without text."""
    together: list[int]
    """The inputs scored together on the device (one prompt each, no sentence scores), in
    order: positions into ``prompts``."""
    distraction: DistractionPrompts | None
    """The distraction prompts of ``together``, in order; ``None`` without distraction, or when
    they could not be tokenized together (the device's share then tokenizes them itself)."""
    lexical: list[list[float]]
    """BM25 (``ragfocus.scoring.lexical``) of each ``together`` input's texts."""


def prepare_inputs(
    tokenizer: object,
    inputs: Sequence[tuple[str, Sequence[str]]],
    *,
    prompt_tokens: int | None,
    sentences: bool,
    distraction: bool,
) -> PreparedInputs:
    """Tokenize a batch of ``(query, distinct non-empty texts)`` inputs for ``Focuser.rank_many``.

    An input goes ``together`` when it fits one prompt of ``prompt_tokens`` (``None``: no
    limit) and no sentence scores are asked for; the others are left to ``Focuser`` (windows,
    one input at a time). One bad input gets its own error and never stops the others.
    """
    try:
        prompts: list[TokenizedPrompt | Exception | None] = list(build_prompts(tokenizer, inputs))
    except ValueError:  # a query that yields no tokens: find it below, one by one
        prompts = [None] * len(inputs)
    for number, (query, texts) in enumerate(inputs):
        if not texts:
            prompts[number] = None
        elif prompts[number] is None:
            try:
                prompts[number] = build_prompt(tokenizer, query, texts)
            except Exception as error:  # noqa: BLE001 - this input's own error, handed back
                prompts[number] = error
    together = [
        number
        for number, prompt in enumerate(prompts)
        if isinstance(prompt, TokenizedPrompt) and not sentences and (prompt_tokens is None or prompt.total_tokens <= prompt_tokens)
    ]
    chosen = [(inputs[number][0], list(inputs[number][1])) for number in together]
    distraction_prompts = None
    if distraction and chosen:
        try:
            distraction_prompts = tokenize_distraction(tokenizer, chosen)
        except Exception as error:  # noqa: BLE001 - the device's share tokenizes them again and reports it
            logger.debug("distraction prompts could not be tokenized together: %s", error)
    return PreparedInputs(prompts, together, distraction_prompts, [bm25_scores(query, texts) for query, texts in chosen])


def merge_prepared(parts: Sequence[PreparedInputs]) -> PreparedInputs:
    """One ``PreparedInputs`` from those of consecutive slices of a batch: what
    ``prepare_inputs`` gives for the whole batch, since it prepares every input on its own.
    The distraction prompts are ``None`` when any part has none while another has some."""
    prompts: list[TokenizedPrompt | Exception | None] = []
    together: list[int] = []
    lexical: list[list[float]] = []
    for part in parts:
        together += [len(prompts) + number for number in part.together]
        prompts += part.prompts
        lexical += part.lexical
    with_distraction = [part.distraction for part in parts if part.together]
    distraction = None
    if with_distraction and all(found is not None for found in with_distraction):
        present = [found for found in with_distraction if found is not None]
        if len({found.answer_length for found in present}) == 1:
            distraction = DistractionPrompts(
                [sequence for found in present for sequence in found.sequences],
                present[0].answer_length,
                [count for found in present for count in found.passages],
            )
    return PreparedInputs(prompts, together, distraction, lexical)
