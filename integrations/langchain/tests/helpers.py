"""Test helpers: a small in-memory retriever that honors ``k``, short real passages, and a
fake ``Focuser`` for unit tests that are about the LangChain side, not about scoring."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field
from ragfocus import Focuser, ScoredPassage
from ragfocus.fusion import HEADS_ONLY
from ragfocus.passages import PassageLike, as_passages

_WORD = re.compile(r"\w+")

QUERY = "Who built the Eiffel Tower and when was it finished?"


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def corpus() -> list[Document]:
    """Short real-world passages with ids and nested metadata (a few sentences each)."""
    rows = [
        ("eiffel", "The Eiffel Tower in Paris was finished in 1889 for the World's Fair.", "wiki/Eiffel_Tower"),
        (
            "gustave",
            "Gustave Eiffel's company designed and built the tower's wrought-iron lattice.",
            "wiki/Gustave_Eiffel",
        ),
        ("banana", "Bananas are botanically berries and grow in clusters called hands.", "wiki/Banana"),
        ("louvre", "The Louvre in Paris is the world's most-visited art museum.", "wiki/Louvre"),
        ("everest", "Mount Everest is Earth's highest mountain above sea level.", "wiki/Mount_Everest"),
        ("tower", "Tower Bridge in London was finished in 1894 and crosses the Thames.", "wiki/Tower_Bridge"),
    ]
    return [
        Document(
            page_content=text,
            id=identifier,
            metadata={"source": source, "tags": ["demo", identifier], "extra": {"n": i}},
        )
        for i, (identifier, text, source) in enumerate(rows)
    ]


class WordOverlapRetriever(BaseRetriever):
    """Returns the stored documents (the very objects) ranked by words shared with the
    query; ``k`` as a field or an ``invoke`` keyword, like a vector store retriever."""

    documents: list[Document]
    k: int = 4
    calls: list[dict[str, Any]] = Field(default_factory=list)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None, **kwargs: Any
    ) -> list[Document]:
        self.calls.append({"query": query, "k": k, **kwargs})
        wanted = words(query)
        ranked = sorted(self.documents, key=lambda document: -len(wanted & words(document.page_content)))
        return ranked[: self.k if k is None else k]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None, **kwargs: Any
    ) -> list[Document]:
        # BaseRetriever's default async path accepts no keywords, so a retriever reading k overrides it
        return self._get_relevant_documents(query, run_manager=run_manager.get_sync(), k=k, **kwargs)


class WordOverlapFocuser(Focuser):
    """A ``Focuser`` whose scores are the share of query words a passage contains, and whose
    tokens are words. The selection, ordering and copying are ragfocus's own."""

    def __init__(self) -> None:  # no model: nothing of Focuser.__init__ is needed by focus()
        self.token_count = lambda text: len(text.split())
        self.lock = threading.RLock()
        self.fusion = HEADS_ONLY  # no slot strengths: order="calibrated" falls back to edges
        self.calls = 0

    def _rankings(self, requests: list[Any], *, sentences: bool, batch_size: int, errors: str) -> list[Any]:
        """The pipeline's place in ``focus_many``: each checked request ranked by word overlap."""
        if sentences:
            raise NotImplementedError("the word-overlap fake scores no sentences")
        return [request if isinstance(request, Exception) else (self.rank(request.query, request.items), {})
                for request in requests]

    def rank(self, query: str, passages: Sequence[PassageLike]) -> list[ScoredPassage]:
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query is empty: ranking needs a question or search query")
        self.calls += 1
        items = as_passages(passages)
        wanted = words(query)
        scores = [len(wanted & words(item.text)) / len(wanted) if item.text.strip() else -math.inf for item in items]
        order = sorted(range(len(items)), key=lambda index: (-scores[index], index))
        return [
            ScoredPassage(index, rank, items[index].text, scores[index], {"overlap": scores[index]}, items[index])
            for rank, index in enumerate(order)
        ]
