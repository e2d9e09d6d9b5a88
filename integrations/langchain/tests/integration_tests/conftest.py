"""Integration tests run the real default model: the embedded SmolLM2-135M-Instruct."""

from __future__ import annotations

import pytest
from ragfocus import Focuser
from ragfocus.focuser import default_focuser

from tests.helpers import WordOverlapRetriever, corpus


@pytest.fixture(scope="session")
def focuser() -> Focuser:
    """``Focuser()`` on the default model, loaded once per session. It is the shared one
    (``default_focuser()``) that components built without ``focuser=`` use, so those tests
    load no second copy."""
    return default_focuser()


@pytest.fixture
def base_retriever() -> WordOverlapRetriever:
    return WordOverlapRetriever(documents=corpus(), k=5)


@pytest.fixture
def count_tokens(focuser: Focuser):
    """Tokens of the default model's tokenizer, which counts budgets when none is given."""
    tokenizer = focuser.loaded.tokenizer
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False)) if text else 0
