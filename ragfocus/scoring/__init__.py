"""Scoring signals computed from the scorer model's attention."""

from ragfocus.scoring.heads import middle_layer_heads
from ragfocus.scoring.retrieval_heads import (
    HeadAttention,
    RetrievalHeadScores,
    capture_head_attention,
    score_head_set,
    score_retrieval_heads,
)

__all__ = [
    "HeadAttention",
    "RetrievalHeadScores",
    "capture_head_attention",
    "middle_layer_heads",
    "score_head_set",
    "score_retrieval_heads",
]
