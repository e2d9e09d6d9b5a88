"""``RagFocusReorder``: every document kept, reordered by a small LM's attention.

LangChain's ``LongContextReorder`` puts documents at both ends by the order the retriever
gave them; this ranks them for the query first (ragfocus), then arranges them.

>>> from langchain_ragfocus import RagFocusReorder                             # doctest: +SKIP
>>> reordered = RagFocusReorder(order="edges").transform_documents(documents, query="Who built it?")
>>> [d.metadata["ragfocus"]["rank"] for d in reordered]
[0, 2, 3, 1]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, BaseDocumentTransformer, Document
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict
from ragfocus.types import Order

from langchain_ragfocus.documents import annotated, checked_documents
from langchain_ragfocus.options import FocuserField


class RagFocusReorder(FocuserField, BaseDocumentCompressor, BaseDocumentTransformer):
    """Reorders documents by their ragfocus rank for a query; drops none.

    Returns copies of all the documents (ids and metadata kept) with
    ``metadata["ragfocus"]`` holding ``score``, ``rank``, ``index`` and ``signals``; empty
    documents, which are not shown to the model, come last. Inputs are never mutated.

    As a ``BaseDocumentTransformer`` it needs the query as a keyword:
    ``transform_documents(documents, query=...)``. It is also a ``BaseDocumentCompressor``
    (``compress_documents(documents, query)``), so compression pipelines and
    ``ContextualCompressionRetriever``, which pass the query only to compressors, can use it.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, use_attribute_docstrings=True)

    order: Order = "edges"
    """``"edges"`` (best at both ends, weakest in the middle, against "lost in the middle"),
    ``"attention"`` (best last, nearest the question), ``"relevance"`` (best first) or
    ``"original"`` (input order; only adds the metadata)."""

    def transform_documents(
        self, documents: Sequence[Document], *, query: str | None = None, **kwargs: Any
    ) -> Sequence[Document]:
        """All ``documents``, ranked for ``query`` and arranged in ``order``.

        Raises:
            ValueError: no ``query`` was given, or it is empty.
            TypeError: an unexpected keyword, or an item that is not a ``Document``.
        """
        if kwargs:
            raise TypeError(
                f"RagFocusReorder.transform_documents got unexpected keywords {sorted(kwargs)}; it takes query="
            )
        if query is None:
            raise ValueError(
                "RagFocusReorder ranks documents against a query: call transform_documents(documents, query=...)"
            )
        documents = checked_documents(documents, caller="RagFocusReorder")
        result = self.get_focuser().focus(query, documents, order=self.order)
        everything = [*result.kept, *result.dropped]  # with no limits, only empty documents are dropped
        return [annotated(documents[scored.index], scored) for scored in everything]

    async def atransform_documents(
        self, documents: Sequence[Document], *, query: str | None = None, **kwargs: Any
    ) -> Sequence[Document]:
        """``transform_documents`` on a worker thread, so the event loop keeps running."""
        return await run_in_executor(None, self.transform_documents, documents, query=query, **kwargs)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """``transform_documents(documents, query=query)``: the compressor interface."""
        return self.transform_documents(documents, query=query)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """``atransform_documents(documents, query=query)``: the compressor interface."""
        return await self.atransform_documents(documents, query=query)
