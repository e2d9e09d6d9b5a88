"""Scoring signals computed from the scorer model's attention."""

from ragfocus.scoring.heads import middle_layer_heads
from ragfocus.scoring.retrieval_heads import RetrievalHeadScores, score_retrieval_heads

__all__ = ["RetrievalHeadScores", "middle_layer_heads", "score_retrieval_heads"]
