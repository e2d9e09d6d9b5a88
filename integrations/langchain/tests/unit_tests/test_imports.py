"""The public surface is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import re
from pathlib import Path

from langchain_core.documents import BaseDocumentCompressor, BaseDocumentTransformer
from langchain_core.retrievers import BaseRetriever

import langchain_ragfocus
from langchain_ragfocus import RagFocusCompressor, RagFocusReorder, RagFocusRetriever

EXPECTED_ALL = [
    "RagFocusCompressor",
    "RagFocusReorder",
    "RagFocusRetriever",
    "__version__",
]


def test_all_imports() -> None:
    assert sorted(EXPECTED_ALL) == sorted(langchain_ragfocus.__all__)
    for name in langchain_ragfocus.__all__:
        assert hasattr(langchain_ragfocus, name)


def test_version_is_the_one_in_pyproject() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    declared = re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE)
    assert declared is not None
    assert langchain_ragfocus.__version__ == declared.group(1)


def test_components_implement_the_langchain_interfaces() -> None:
    assert issubclass(RagFocusCompressor, BaseDocumentCompressor)
    assert issubclass(RagFocusRetriever, BaseRetriever)
    assert issubclass(RagFocusReorder, BaseDocumentTransformer)
    assert issubclass(RagFocusReorder, BaseDocumentCompressor)
