"""``RagFocusRetriever``: any LangChain retriever, then ragfocus over what it found.

>>> from langchain_ragfocus import RagFocusRetriever                           # doctest: +SKIP
>>> retriever = RagFocusRetriever(base_retriever=vectorstore.as_retriever(), k=8, budget=300)
>>> documents = retriever.invoke("Who built the Eiffel Tower?")
>>> documents = retriever.invoke("Who built the Eiffel Tower?", k=4, budget=100)  # per call
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field
from ragfocus.selection import SelectionConfig

from langchain_ragfocus.documents import annotated, checked_documents
from langchain_ragfocus.options import SELECTION_OPTIONS, FocusOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Call:
    """The keyword arguments of one ``invoke``, sorted by who reads them."""

    k: int | None
    overrides: dict[str, Any]
    """Per-call focus options (``budget``, ``top_k``, ...)."""
    base_kwargs: dict[str, Any]
    """Everything else, passed on to the base retriever."""


class RagFocusRetriever(FocusOptions, BaseRetriever):
    """Retrieves with ``base_retriever``, then keeps the documents ragfocus selects.

    The base retriever is asked for ``k`` documents; ragfocus ranks them by a small LM's
    attention and keeps the best under ``budget`` / ``ratio`` / ``top_k`` / ``threshold``,
    in ``order``. Returned documents are copies of the retrieved ones (ids and metadata
    kept) with ``metadata["ragfocus"]`` holding ``score``, ``rank``, ``index`` and
    ``signals``. With no budget, ratio, top-k or threshold, all ``k`` documents come back,
    reordered.

    Keyword arguments of ``invoke`` / ``ainvoke``: ``k`` and the focus options
    (``budget``, ``ratio``, ``top_k``, ``threshold``, ``order``, ``separator``) override the
    fields for that call; any other keyword goes to the base retriever. The base retriever
    runs as a child run of this one, so callbacks and tracing see both.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, use_attribute_docstrings=True)

    base_retriever: BaseRetriever
    """The retriever whose documents are focused: any LangChain ``BaseRetriever``."""

    k: int | None = Field(default=None, ge=1, strict=True)
    """How many documents to retrieve and hand to ragfocus. Passed to the base retriever as
    the keyword named by ``k_argument`` (``VectorStoreRetriever`` and most retrievers read
    ``k``); the retrieved list is cut to ``k`` in any case. ``None``: everything the base
    retriever returns."""

    k_argument: str | None = "k"
    """The base retriever's keyword for the number of results; ``None`` passes none (then
    only the cut to ``k`` applies)."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        call = self._call(kwargs)
        retrieved = self.base_retriever.invoke(query, config={"callbacks": run_manager.get_child()}, **call.base_kwargs)
        return self._focused(retrieved, query, call)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        call = self._call(kwargs)
        retrieved = await self.base_retriever.ainvoke(
            query, config={"callbacks": run_manager.get_child()}, **call.base_kwargs
        )
        return await run_in_executor(None, self._focused, retrieved, query, call)

    def _call(self, kwargs: Mapping[str, Any]) -> _Call:
        remaining = dict(kwargs)
        k = _checked_k(remaining.pop("k", self.k))
        overrides = {name: remaining.pop(name) for name in SELECTION_OPTIONS if name in remaining}
        SelectionConfig(**self.selection_options(overrides))  # bad options fail before retrieval
        if k is not None and self.k_argument is not None:
            remaining[self.k_argument] = k
        return _Call(k=k, overrides=overrides, base_kwargs=remaining)

    def _focused(self, retrieved: list[Document], query: str, call: _Call) -> list[Document]:
        documents = checked_documents(
            retrieved, caller=f"RagFocusRetriever (from {type(self.base_retriever).__name__})"
        )
        if call.k is not None and len(documents) > call.k:
            logger.debug("base retriever returned %d documents; passing the first k=%d", len(documents), call.k)
            documents = documents[: call.k]
        result = self.focus_documents(documents, query, call.overrides)
        return [annotated(documents[scored.index], scored) for scored in result.kept]


def _checked_k(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"k must be an int number of documents, got {value!r}")
    if value < 1:
        raise ValueError(f"k must be >= 1 documents, got {value}")
    return value
