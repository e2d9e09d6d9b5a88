"""``RagFocusCompressor``: keep the retrieved documents the query attends to, under a budget.

>>> from langchain_ragfocus import RagFocusCompressor                          # doctest: +SKIP
>>> compressor = RagFocusCompressor(budget=300, order="edges")
>>> kept = compressor.compress_documents(documents, "Who built the Eiffel Tower?")
>>> [(d.id, d.metadata["ragfocus"]["rank"]) for d in kept]
[('eiffel', 0), ('gustave', 1)]
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict

from langchain_ragfocus.documents import annotated, checked_documents
from langchain_ragfocus.options import FocusOptions


class RagFocusCompressor(FocusOptions, BaseDocumentCompressor):
    """A document compressor that ranks documents by a small LM's attention (ragfocus) and
    keeps the best ones under a token budget, top-k and/or score threshold.

    Returns copies of the kept documents in ``order``: ids, content and metadata are those
    of the input, and ``metadata["ragfocus"]`` holds ``score``, ``rank``, ``index`` and
    ``signals``. The input documents are never mutated. With no budget, ratio, top-k or
    threshold every non-empty document is kept and only reordered.

    Use it with LangChain's ``ContextualCompressionRetriever``, or through
    ``RagFocusRetriever``, which also wraps a retriever.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, use_attribute_docstrings=True)

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Keep what ragfocus selects for ``query``, as annotated copies, in ``order``.

        ``callbacks`` is accepted for the interface; ranking starts no LangChain run.

        Raises:
            TypeError: ``documents`` holds something other than ``Document`` objects.
            ValueError: an empty query, or more text than the scoring model reads.
        """
        documents = checked_documents(documents, caller="RagFocusCompressor")
        result = self.focus_documents(documents, query)
        return [annotated(documents[scored.index], scored) for scored in result.kept]

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """``compress_documents`` on a worker thread, so the event loop keeps running.

        Concurrent calls are safe: the ``Focuser`` serializes its model work.
        """
        return await run_in_executor(None, self.compress_documents, documents, query, callbacks)
