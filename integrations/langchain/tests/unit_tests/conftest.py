"""Unit tests touch neither the network nor the scoring model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_socket

import langchain_ragfocus.options
from tests.helpers import WordOverlapFocuser, WordOverlapRetriever, corpus


@pytest.fixture(autouse=True)
def _no_network_and_no_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse() -> None:
        raise AssertionError("a unit test reached the default model; pass focuser=WordOverlapFocuser()")

    monkeypatch.setattr(langchain_ragfocus.options, "default_focuser", refuse)
    pytest_socket.disable_socket(allow_unix_socket=True)  # asyncio's event loop needs a socketpair
    yield
    pytest_socket.enable_socket()


@pytest.fixture
def fake_focuser() -> WordOverlapFocuser:
    return WordOverlapFocuser()


@pytest.fixture
def base_retriever() -> WordOverlapRetriever:
    return WordOverlapRetriever(documents=corpus(), k=4)
