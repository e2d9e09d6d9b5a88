"""Every option of the components on the real model, checked against ``Focuser.rank``."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from langchain_core.documents import Document
from ragfocus import Focuser
from ragfocus.ordering import arrange

from langchain_ragfocus import RagFocusCompressor, RagFocusReorder
from tests.helpers import QUERY, corpus


@pytest.fixture(scope="module")
def documents() -> list[Document]:
    return corpus()


@pytest.fixture(scope="module")
def ranking(focuser: Focuser, documents: list[Document]) -> list[str]:
    """Document ids, best first, as ragfocus itself ranks them."""
    return [documents[scored.index].id or "" for scored in focuser.rank(QUERY, documents)]


def ids(documents: list[Document]) -> list[str]:
    return [document.id or "" for document in documents]


def test_the_model_ranks_the_answering_passages_first(ranking: list[str]) -> None:
    assert ranking[0] in {"eiffel", "gustave"}
    assert ranking.index("banana") > 1 and ranking.index("everest") > 1


@pytest.mark.parametrize("order", ["relevance", "attention", "edges", "original"])
def test_reorder_returns_all_documents_in_the_asked_layout(
    order: str, focuser: Focuser, documents: list[Document], ranking: list[str]
) -> None:
    reordered = RagFocusReorder(order=order, focuser=focuser).transform_documents(documents, query=QUERY)
    assert sorted(ids(reordered)) == sorted(ids(documents))
    ranks = {document.id: document.metadata["ragfocus"]["rank"] for document in reordered}
    assert [ranks[identifier] for identifier in ranking] == list(range(len(documents)))
    expected = [item.id for item in arrange(_ranked(documents, ranking), order)]
    assert ids(reordered) == expected


def _ranked(documents: list[Document], ranking: list[str]) -> list[Any]:
    """Stand-ins with ``rank`` and ``index`` for ``ragfocus.ordering.arrange``."""
    position = {document.id: index for index, document in enumerate(documents)}
    return [
        SimpleNamespace(id=identifier, rank=rank, index=position[identifier]) for rank, identifier in enumerate(ranking)
    ]


def test_budget_counts_the_default_tokenizer(
    focuser: Focuser, documents: list[Document], ranking: list[str], count_tokens: Callable[[str], int]
) -> None:
    budget = count_tokens(documents[ids(documents).index(ranking[0])].page_content)
    kept = RagFocusCompressor(budget=budget, focuser=focuser).compress_documents(documents, QUERY)
    assert ids(kept) == [ranking[0]]
    assert RagFocusCompressor(budget=0, focuser=focuser).compress_documents(documents, QUERY) == []


def test_ratio_top_k_and_threshold(
    focuser: Focuser, documents: list[Document], ranking: list[str], count_tokens: Callable[[str], int]
) -> None:
    total = count_tokens("\n\n".join(document.page_content for document in documents))
    half = RagFocusCompressor(ratio=0.5, focuser=focuser).compress_documents(documents, QUERY)
    assert 0 < count_tokens("\n\n".join(document.page_content for document in half)) <= math.floor(0.5 * total)

    assert ids(RagFocusCompressor(top_k=2, focuser=focuser).compress_documents(documents, QUERY)) == ranking[:2]

    above = RagFocusCompressor(threshold=0.0, focuser=focuser).compress_documents(documents, QUERY)
    assert above and all(document.metadata["ragfocus"]["score"] >= 0.0 for document in above)
    assert ids(above) == [identifier for identifier in ranking if identifier in ids(above)]


def test_sentence_granularity_prunes_inside_documents(
    focuser: Focuser, documents: list[Document], count_tokens: Callable[[str], int]
) -> None:
    long_documents = [
        document.model_copy(update={"page_content": document.page_content + " It is often photographed. Many people visit it every year."})
        for document in documents
    ]
    budget = count_tokens(long_documents[0].page_content) + 10
    kept = RagFocusCompressor(budget=budget, granularity="sentence", focuser=focuser).compress_documents(long_documents, QUERY)
    assert kept and count_tokens("\n\n".join(document.page_content for document in kept)) <= budget
    pruned = [document for document in kept if document.metadata["ragfocus"]["pruned"]]
    assert pruned
    originals = {document.id: document for document in long_documents}
    for document in pruned:
        assert len(document.page_content) < len(originals[document.id].page_content)
        assert document.metadata["source"] == originals[document.id].metadata["source"]
    assert all("ragfocus" not in document.metadata for document in long_documents)  # inputs untouched


def test_a_generator_tokenizer_and_separator_set_the_budget(focuser: Focuser, documents: list[Document]) -> None:
    words = lambda text: len(text.split())
    compressor = RagFocusCompressor(budget=30, tokenizer=words, separator=" | ", order="original", focuser=focuser)
    kept = compressor.compress_documents(documents, QUERY)
    assert words(" | ".join(document.page_content for document in kept)) <= 30
    assert [document.metadata["ragfocus"]["index"] for document in kept] == sorted(
        document.metadata["ragfocus"]["index"] for document in kept
    )


def test_a_hugging_face_tokenizer_object_is_accepted(
    focuser: Focuser, documents: list[Document], ranking: list[str]
) -> None:
    compressor = RagFocusCompressor(top_k=1, tokenizer=focuser.loaded.tokenizer, focuser=focuser)
    assert ids(compressor.compress_documents(documents, QUERY)) == ranking[:1]


def test_ragfocus_errors_reach_the_caller(focuser: Focuser, documents: list[Document]) -> None:
    with pytest.raises(ValueError, match="query is empty"):
        RagFocusCompressor(focuser=focuser).compress_documents(documents, "   ")
    with pytest.raises(TypeError, match="query must be a str"):
        RagFocusCompressor(focuser=focuser).compress_documents(documents, None)  # type: ignore[arg-type]
