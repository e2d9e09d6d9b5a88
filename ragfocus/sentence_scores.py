"""Sentence scores for sentence-level pruning: calibrated attention per sentence.

AttentionRAG (Fang et al., "AttentionRAG: Attention-Guided Context Pruning in Retrieval-
Augmented Generation", 2025) keeps the sentences of a context that the model attends to
while reading the question. Here a sentence's score is the mean, over its tokens, of the
retrieval heads' calibrated attention (query minus content-free, sinks left out): the same
quantity that scores a whole passage, read at a finer grain from the same forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ragfocus.prompt import TokenizedPrompt, token_span
from ragfocus.sentences import split_sentences


@dataclass(frozen=True)
class ScoredSentence:
    start: int
    end: int
    """[start, end) characters of the passage text."""
    text: str
    score: float
    """Mean calibrated attention per token (NaN when every token is a sink)."""


def sentence_scores(prompt: TokenizedPrompt, per_token: torch.Tensor) -> list[list[ScoredSentence]]:
    """Per passage of ``prompt`` (prompt order), its sentences with their scores."""
    result: list[list[ScoredSentence]] = []
    for number, (first, last) in enumerate(prompt.passage_spans):
        offset, stop = prompt.passage_chars[number]
        text = prompt.prefix_text[offset:stop]
        scored = []
        for sentence in split_sentences(text):
            start, end = token_span(prompt.prefix_offsets, (offset + sentence.start, offset + sentence.end))
            start, end = max(start, first), min(end, last)
            values = per_token[start:end]
            values = values[~torch.isnan(values)]
            score = float(values.mean()) if values.numel() else math.nan
            scored.append(ScoredSentence(sentence.start, sentence.end, sentence.text, score))
        result.append(scored)
    return result

