"""Documents come back as annotated copies; inputs are never touched; runs nest."""

from __future__ import annotations

import copy
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document

from langchain_ragfocus import RagFocusCompressor, RagFocusReorder, RagFocusRetriever
from tests.helpers import QUERY, WordOverlapFocuser, WordOverlapRetriever, corpus


class TitledDocument(Document):
    """A Document subclass with an extra field, as some loaders produce."""

    title: str = ""


def snapshot(documents: list[Document]) -> list[tuple[Any, ...]]:
    return [(type(d), d.id, d.page_content, copy.deepcopy(d.metadata)) for d in documents]


def test_compressed_documents_are_copies_with_ragfocus_metadata(fake_focuser: WordOverlapFocuser) -> None:
    documents = corpus()
    before = snapshot(documents)
    kept = RagFocusCompressor(focuser=fake_focuser, top_k=3).compress_documents(documents, QUERY)

    assert snapshot(documents) == before
    assert [document.id for document in kept] == ["eiffel", "gustave", "tower"]
    for document in kept:
        original = next(item for item in documents if item.id == document.id)
        assert document is not original
        assert document.page_content == original.page_content
        assert {key: value for key, value in document.metadata.items() if key != "ragfocus"} == original.metadata
        assert document.metadata["tags"] is not original.metadata["tags"]
        assert set(document.metadata["ragfocus"]) == {"score", "rank", "index", "signals", "pruned"}
        assert documents[document.metadata["ragfocus"]["index"]] is original
    assert [document.metadata["ragfocus"]["rank"] for document in kept] == [0, 1, 2]
    assert kept[0].metadata["ragfocus"]["signals"] == {"overlap": kept[0].metadata["ragfocus"]["score"]}


def test_changing_an_output_document_leaves_the_input_alone(fake_focuser: WordOverlapFocuser) -> None:
    documents = corpus()
    before = snapshot(documents)
    kept = RagFocusCompressor(focuser=fake_focuser).compress_documents(documents, QUERY)
    for document in kept:
        document.metadata["tags"].append("changed")
        document.metadata["extra"]["n"] = -1
        document.metadata["source"] = "changed"
    assert snapshot(documents) == before


def test_class_extra_fields_and_an_earlier_annotation_survive(fake_focuser: WordOverlapFocuser) -> None:
    documents = [
        TitledDocument(
            page_content="The Eiffel Tower was finished in 1889.", id="a", title="Eiffel", metadata={"ragfocus": "old"}
        ),
        TitledDocument(page_content="Bananas are berries.", id="b", title="Banana"),
    ]
    kept = RagFocusCompressor(focuser=fake_focuser).compress_documents(documents, QUERY)
    assert [type(document) for document in kept] == [TitledDocument, TitledDocument]
    assert [(document.id, document.title) for document in kept] == [("a", "Eiffel"), ("b", "Banana")]
    assert kept[0].metadata["ragfocus"]["rank"] == 0
    assert documents[0].metadata == {"ragfocus": "old"}


def test_documents_without_id_or_metadata(fake_focuser: WordOverlapFocuser) -> None:
    kept = RagFocusCompressor(focuser=fake_focuser).compress_documents([Document("The Eiffel Tower.")], QUERY)
    assert kept[0].id is None
    assert list(kept[0].metadata) == ["ragfocus"]


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("relevance", ["eiffel", "gustave", "tower", "banana", "louvre", "everest"]),
        ("attention", ["everest", "louvre", "banana", "tower", "gustave", "eiffel"]),
        ("edges", ["eiffel", "tower", "louvre", "everest", "banana", "gustave"]),
        ("original", ["eiffel", "gustave", "banana", "louvre", "everest", "tower"]),
    ],
)
def test_reorder_returns_every_document_in_order(
    order: str, expected: list[str], fake_focuser: WordOverlapFocuser
) -> None:
    documents = corpus()
    before = snapshot(documents)
    reordered = RagFocusReorder(focuser=fake_focuser, order=order).transform_documents(documents, query=QUERY)
    assert [document.id for document in reordered] == expected
    assert all("ragfocus" in document.metadata for document in reordered)
    assert snapshot(documents) == before


def test_reorder_puts_empty_documents_last(fake_focuser: WordOverlapFocuser) -> None:
    documents = [Document(" ", id="blank"), *corpus()[:2]]
    reordered = RagFocusReorder(focuser=fake_focuser, order="attention").transform_documents(documents, query=QUERY)
    assert [document.id for document in reordered] == ["gustave", "eiffel", "blank"]
    assert reordered[-1].metadata["ragfocus"]["score"] == float("-inf")


def test_reorder_needs_a_query(fake_focuser: WordOverlapFocuser) -> None:
    reorder = RagFocusReorder(focuser=fake_focuser)
    with pytest.raises(ValueError, match=r"transform_documents\(documents, query=...\)"):
        reorder.transform_documents(corpus())
    with pytest.raises(ValueError, match="query is empty"):
        reorder.transform_documents(corpus(), query="  ")
    with pytest.raises(TypeError, match="unexpected keywords"):
        reorder.transform_documents(corpus(), query=QUERY, querry=QUERY)


def test_reorder_is_also_a_compressor(fake_focuser: WordOverlapFocuser) -> None:
    reorder = RagFocusReorder(focuser=fake_focuser)
    assert reorder.compress_documents(corpus(), QUERY) == reorder.transform_documents(corpus(), query=QUERY)


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ("just a string", "list of langchain_core Documents"),
        ([Document("fine"), "a string"], r"documents\[1\] is str"),
        ([{"page_content": "a dict"}], r"documents\[0\] is dict"),
    ],
)
def test_items_that_are_not_documents_are_named(documents: Any, message: str, fake_focuser: WordOverlapFocuser) -> None:
    for call in (
        lambda: RagFocusCompressor(focuser=fake_focuser).compress_documents(documents, QUERY),
        lambda: RagFocusReorder(focuser=fake_focuser).transform_documents(documents, query=QUERY),
    ):
        with pytest.raises(TypeError, match=message):
            call()


def test_no_documents_give_no_documents(fake_focuser: WordOverlapFocuser) -> None:
    assert RagFocusCompressor(focuser=fake_focuser).compress_documents([], QUERY) == []
    assert RagFocusReorder(focuser=fake_focuser).transform_documents([], query=QUERY) == []


async def test_async_methods_give_the_sync_results(
    fake_focuser: WordOverlapFocuser, base_retriever: WordOverlapRetriever
) -> None:
    compressor = RagFocusCompressor(focuser=fake_focuser, top_k=2)
    reorder = RagFocusReorder(focuser=fake_focuser)
    retriever = RagFocusRetriever(base_retriever=base_retriever, focuser=fake_focuser, top_k=2)
    documents = corpus()
    assert await compressor.acompress_documents(documents, QUERY) == compressor.compress_documents(documents, QUERY)
    assert await reorder.atransform_documents(documents, query=QUERY) == reorder.transform_documents(
        documents, query=QUERY
    )
    assert await reorder.acompress_documents(documents, QUERY) == reorder.compress_documents(documents, QUERY)
    assert await retriever.ainvoke(QUERY) == retriever.invoke(QUERY)


class RunRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts: list[tuple[str, UUID, UUID | None]] = []

    def on_retriever_start(
        self, serialized: dict[str, Any], query: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self.starts.append((kwargs.get("name") or serialized.get("name", ""), run_id, parent_run_id))


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_the_base_retriever_runs_as_a_child_run(
    asynchronous: bool, fake_focuser: WordOverlapFocuser, base_retriever: WordOverlapRetriever
) -> None:
    recorder = RunRecorder()
    retriever = RagFocusRetriever(base_retriever=base_retriever, focuser=fake_focuser)
    config = {"callbacks": [recorder], "tags": ["outer"]}
    if asynchronous:
        await retriever.ainvoke(QUERY, config=config)
    else:
        retriever.invoke(QUERY, config=config)
    (outer_name, outer_id, outer_parent), (inner_name, _, inner_parent) = recorder.starts
    assert (outer_name, outer_parent) == ("RagFocusRetriever", None)
    assert (inner_name, inner_parent) == ("WordOverlapRetriever", outer_id)


def test_batch_gives_the_invoke_results(fake_focuser: WordOverlapFocuser, base_retriever: WordOverlapRetriever) -> None:
    retriever = RagFocusRetriever(base_retriever=base_retriever, focuser=fake_focuser, top_k=2)
    queries = [QUERY, "Which museum is in Paris?", "How high is Mount Everest?"]
    assert retriever.batch(queries) == [retriever.invoke(query) for query in queries]
