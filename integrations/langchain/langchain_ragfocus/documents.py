"""Copy LangChain documents with ragfocus's verdict under ``metadata["ragfocus"]``.

Input documents are never mutated: each output document is a copy whose metadata is the
deep copy ragfocus made of the input's (``ragfocus.passages.as_passage``), plus one key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document
from ragfocus import ScoredPassage

logger = logging.getLogger(__name__)

METADATA_KEY = "ragfocus"
"""The metadata key under which every returned document carries its score, rank and signals."""


def checked_documents(documents: Sequence[Document], *, caller: str) -> list[Document]:
    """``documents`` as a list, after checking every item is a LangChain ``Document``.

    Raises:
        TypeError: naming the first item that is not a ``Document`` (or the container).
    """
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"{caller} takes a list of langchain_core Documents, got {type(documents).__name__}")
    for position, document in enumerate(documents):
        if not isinstance(document, Document):
            raise TypeError(
                f"{caller}: documents[{position}] is {type(document).__name__}; expected a langchain_core Document"
            )
    return list(documents)


def ragfocus_metadata(scored: ScoredPassage) -> dict[str, Any]:
    """What ragfocus says about one document.

    ``score`` is the fused relevance (z units over the query's documents; calibrated
    attention with ``fusion="heads"``; ``-inf`` for an empty document), ``rank`` its place in
    the ranking (0 = most relevant), ``index`` its position in the input list, ``signals``
    every signal behind the score (NaN for an empty document), ``pruned`` whether sentences
    were dropped from it (``granularity="sentence"``).
    """
    return {
        "score": float(scored.score),
        "rank": scored.rank,
        "index": scored.index,
        "signals": {name: float(value) for name, value in scored.signals.items()},
        "pruned": scored.text != scored.passage.text,
    }


def annotated(document: Document, scored: ScoredPassage) -> Document:
    """A copy of ``document`` (same class and id; content pruned only with sentence
    granularity) whose metadata also holds ``metadata["ragfocus"]``; an earlier
    ``"ragfocus"`` entry is replaced."""
    metadata = dict(scored.metadata)  # ragfocus deep-copied the input's metadata already
    if METADATA_KEY in metadata:
        logger.debug("replacing metadata[%r] of document %s", METADATA_KEY, document.id)
    metadata[METADATA_KEY] = ragfocus_metadata(scored)
    update: dict[str, Any] = {"metadata": metadata}
    if scored.text != scored.passage.text:
        update["page_content"] = scored.text
    return document.model_copy(update=update)
