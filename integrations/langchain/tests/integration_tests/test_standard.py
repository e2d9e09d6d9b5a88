"""LangChain's standard retriever tests, over a small in-memory base retriever that honors k.

Built without ``focuser=``, the retriever uses the shared default ``Focuser`` (the session
fixture's), so these also cover the lazy default.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import RetrieversIntegrationTests
from ragfocus import Focuser

from langchain_ragfocus import RagFocusRetriever
from tests.helpers import QUERY, WordOverlapRetriever, corpus


@pytest.mark.usefixtures("focuser")
class TestRagFocusRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[RagFocusRetriever]:
        return RagFocusRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"base_retriever": WordOverlapRetriever(documents=corpus(), k=6), "k": 4}

    @property
    def retriever_query_example(self) -> str:
        return QUERY


def test_the_standard_retriever_uses_the_shared_default_focuser(focuser: Focuser) -> None:
    retriever = RagFocusRetriever(base_retriever=WordOverlapRetriever(documents=corpus()))
    assert retriever.get_focuser() is focuser
