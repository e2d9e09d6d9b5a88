"""Sentence boundaries inside passages, from a real sentence splitter (pysbd).

pysbd (Sadvilkar & Neumann, "PySBD: Pragmatic Sentence Boundary Disambiguation", NLP-OSS 2020)
follows the Golden Rules of sentence segmentation: abbreviations ("T.S. Arthur"), decimals and
initials do not end a sentence. Spans are character ranges into the passage text; the
whitespace after a sentence belongs to no sentence.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Sentence:
    start: int
    end: int
    """[start, end) characters of the passage text, trailing whitespace excluded."""
    text: str


_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _segmenter(language: str) -> object:
    import pysbd

    return pysbd.Segmenter(language=language, clean=False, char_span=True)


def split_sentences(text: str, *, language: str = "en") -> list[Sentence]:
    """The sentences of ``text`` with their character spans; ``[]`` for blank text."""
    if not text.strip():
        return []
    with _LOCK:  # pysbd segmenters keep per-call state
        spans = _segmenter(language).segment(text)  # type: ignore[attr-defined]
    sentences: list[Sentence] = []
    for span in spans:
        start, end = int(span.start), int(span.end)
        piece = text[start:end]
        stripped_end = start + len(piece.rstrip())
        leading = len(piece) - len(piece.lstrip())
        if stripped_end > start + leading:
            sentences.append(Sentence(start + leading, stripped_end, text[start + leading : stripped_end]))
    return sentences or [Sentence(0, len(text.rstrip()), text.rstrip())]
