"""LangChain components for ragfocus: rank, prune and reorder retrieved documents with the
attention of a small causal LM before the generator sees them.

- ``RagFocusCompressor``: a document compressor (keep the best under a token budget).
- ``RagFocusRetriever``: wraps any retriever; retrieve ``k``, then keep the best.
- ``RagFocusReorder``: a document transformer that keeps every document, reordered.
"""

from __future__ import annotations

import logging
from importlib import metadata

from langchain_ragfocus.compressor import RagFocusCompressor
from langchain_ragfocus.reorder import RagFocusReorder
from langchain_ragfocus.retriever import RagFocusRetriever

try:
    __version__ = metadata.version("langchain-ragfocus")
except metadata.PackageNotFoundError:  # a source tree that was not installed
    __version__ = ""

__all__ = [
    "RagFocusCompressor",
    "RagFocusReorder",
    "RagFocusRetriever",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
