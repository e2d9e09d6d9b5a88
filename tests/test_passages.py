"""``as_passage`` / ``as_passages``: str, Passage and LangChain-like documents in, ``Passage`` out."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any

import pytest

from ragfocus.passages import as_passage, as_passages
from ragfocus.types import Passage


class Document:
    """Duck-typed like ``langchain_core.documents.Document``."""

    def __init__(self, page_content: Any, metadata: Mapping[str, Any] | None = None, id: Any = None) -> None:
        self.page_content = page_content
        self.metadata = metadata
        self.id = id


class BareDocument:
    """A document-like object with no ``id`` attribute at all."""

    def __init__(self, page_content: str, metadata: Mapping[str, Any]) -> None:
        self.page_content = page_content
        self.metadata = metadata


def test_str() -> None:
    assert as_passage("some text", 0) == Passage(text="some text", id=None, metadata={}, score=None)


def test_passage_is_copied_with_every_field() -> None:
    original = Passage(text="t", id="p1", metadata={"source": "a.txt"}, score=0.5)
    converted = as_passage(original, 0)
    assert converted == original
    assert converted is not original
    assert converted.metadata is not original.metadata


def test_document() -> None:
    converted = as_passage(Document("content", {"source": "wiki", "page": 3}, id=7), 0)
    assert converted == Passage(text="content", id="7", metadata={"source": "wiki", "page": 3}, score=None)


def test_document_without_id_or_metadata() -> None:
    assert as_passage(Document("content", None, None), 0) == Passage(text="content")
    assert as_passage(BareDocument("content", {"k": 1}), 0) == Passage(text="content", metadata={"k": 1})


def test_as_passages_mixed_list_keeps_order() -> None:
    items = ["first", Passage(text="second", id="b"), Document("third", {}, id="c")]
    assert [(p.text, p.id) for p in as_passages(items)] == [("first", None), ("second", "b"), ("third", "c")]
    assert as_passages(("a", "b")) == [Passage(text="a"), Passage(text="b")]
    assert as_passages([]) == []


@pytest.mark.parametrize(
    ("bad_item", "type_name"),
    [(3, "int"), (None, "NoneType"), (b"bytes", "bytes"), (Document(5), "Document"), ({"text": "x"}, "dict")],
)
def test_bad_item_names_its_index(bad_item: object, type_name: str) -> None:
    with pytest.raises(TypeError, match=rf"passages\[2\] is {type_name}"):
        as_passages(["a", "b", bad_item])


@pytest.mark.parametrize("not_a_list", ["a string", b"bytes", 42, None, iter(["a"]), {"a"}, {"a": 1}])
def test_non_sequence_raises(not_a_list: object) -> None:
    with pytest.raises(TypeError, match="passages must be a list"):
        as_passages(not_a_list)  # type: ignore[arg-type]


def nested() -> dict[str, Any]:
    return {"source": {"tags": ["a"], "page": 1}}


@pytest.mark.parametrize(
    "make", [lambda m: Passage(text="t", metadata=m), lambda m: Document("t", m)], ids=["Passage", "Document"]
)
def test_metadata_is_deep_copied(make: Any) -> None:
    metadata = nested()
    converted = as_passages([make(metadata)])[0]
    converted.metadata["source"]["tags"].append("b")
    converted.metadata["source"]["page"] = 2
    converted.metadata["new"] = True
    assert metadata == nested()


def test_metadata_that_cannot_be_deep_copied_is_carried_by_reference() -> None:
    lock = threading.Lock()
    metadata = {"lock": lock, "n": 1}
    converted = as_passage(Passage(text="t", metadata=metadata), 0)
    assert converted.metadata["lock"] is lock
    assert converted.metadata == metadata
    assert converted.metadata is not metadata


@pytest.mark.parametrize("text", [None, b"bytes", 3, ["a"]])
def test_passage_rejects_non_str_text(text: object) -> None:
    with pytest.raises(TypeError, match="Passage.text must be a str"):
        Passage(text=text)  # type: ignore[arg-type]


@pytest.mark.parametrize("metadata", [None, [("a", 1)], "a=1", 3])
def test_passage_rejects_non_mapping_metadata(metadata: object) -> None:
    with pytest.raises(TypeError, match="Passage.metadata must be a mapping"):
        Passage(text="t", metadata=metadata)  # type: ignore[arg-type]


def test_passage_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Passage(text="t").text = "u"  # type: ignore[misc]


def test_document_with_non_mapping_metadata_is_named() -> None:
    class ListMetadataDocument:
        page_content = "x"
        metadata = ["tag"]  # noqa: RUF012 - the malformed input under test
        id = None

    with pytest.raises(TypeError, match=r"passages\[3\]\.metadata"):
        as_passage(ListMetadataDocument(), 3)
