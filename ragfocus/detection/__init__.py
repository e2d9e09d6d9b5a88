"""Retrieval-head detection: score every attention head of a model, select the best.

Methods: ``niah`` (Wu et al., ICLR 2025, copy-paste retrieval score on needle-in-a-haystack)
and ``qr`` (QRHead, EMNLP 2025: calibrated query attention on gold passages).
"""

from ragfocus.detection.detect import DEFAULT_QR_LIMIT, DEFAULT_TOP_K, detect_heads

__all__ = ["DEFAULT_QR_LIMIT", "DEFAULT_TOP_K", "detect_heads"]
