"""retriever -> ragfocus -> prompt, built from langchain-core pieces, on the real model."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel, RunnablePassthrough
from ragfocus import Focuser

from langchain_ragfocus import RagFocusCompressor, RagFocusRetriever
from tests.helpers import QUERY, WordOverlapRetriever

BUDGET = 40

PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Answer from the context only.\n\nContext:\n{context}"), ("human", "{question}")]
)


def with_prompt(documents: Runnable[Any, list[Document]]) -> Runnable[Any, dict[str, Any]]:
    """``{"documents", "question"}`` -> also ``context`` (the documents joined like ragfocus
    counts them) and ``prompt`` (the generator's messages)."""
    return (
        RunnableParallel(documents=documents, question=RunnablePassthrough())
        .assign(context=lambda inputs: "\n\n".join(document.page_content for document in inputs["documents"]))
        .assign(prompt=PROMPT)
    )


def retriever_chain(base: BaseRetriever, focuser: Focuser) -> Runnable[Any, dict[str, Any]]:
    return with_prompt(RagFocusRetriever(base_retriever=base, k=5, budget=BUDGET, focuser=focuser))


def compressor_chain(base: BaseRetriever, focuser: Focuser) -> Runnable[Any, dict[str, Any]]:
    compressor = RagFocusCompressor(budget=BUDGET, focuser=focuser)

    def compress(inputs: dict[str, Any]) -> list[Document]:
        return list(compressor.compress_documents(inputs["documents"], inputs["question"]))

    async def acompress(inputs: dict[str, Any]) -> list[Document]:
        return list(await compressor.acompress_documents(inputs["documents"], inputs["question"]))

    retrieved = RunnableParallel(documents=base, question=RunnablePassthrough())
    return with_prompt(retrieved | RunnableLambda(compress, afunc=acompress))


def check_output(
    output: dict[str, Any], base: WordOverlapRetriever, focuser: Focuser, count_tokens: Callable[[str], int]
) -> None:
    documents = output["documents"]
    assert documents, "the budget fits at least the best passage"
    stored = {document.id: document for document in base.documents}
    for document in documents:
        original = stored[document.id]  # ids survive
        assert document is not original
        assert document.page_content == original.page_content
        assert {key: value for key, value in document.metadata.items() if key != "ragfocus"} == original.metadata
        verdict = document.metadata["ragfocus"]
        assert set(verdict) == {"score", "rank", "index", "signals", "pruned"} and verdict["pruned"] is False
        assert set(verdict["signals"]) == set(focuser.signal_names)
        assert all(math.isfinite(value) for value in verdict["signals"].values())
    # the scores are the Focuser's own fused scores for the same retrieved documents
    ranked = {item.passage.id: item for item in focuser.rank(QUERY, base.invoke(QUERY))}
    for document in documents:
        assert document.metadata["ragfocus"]["score"] == pytest.approx(ranked[document.id].score, abs=1e-5)
    ranks = [document.metadata["ragfocus"]["rank"] for document in documents]
    scores = [document.metadata["ragfocus"]["score"] for document in documents]
    assert ranks == sorted(ranks) and scores == sorted(scores, reverse=True)
    assert documents[0].id in {"eiffel", "gustave"}
    assert count_tokens(output["context"]) <= BUDGET
    messages = output["prompt"].to_messages()
    assert [message.type for message in messages] == ["system", "human"]
    assert messages[1].content == QUERY
    assert all(document.page_content in messages[0].content for document in documents)


@pytest.mark.parametrize("build", [retriever_chain, compressor_chain], ids=["retriever", "compressor"])
async def test_chain_runs_end_to_end_sync_and_async(
    build: Callable[[BaseRetriever, Focuser], Runnable[Any, dict[str, Any]]],
    base_retriever: WordOverlapRetriever,
    focuser: Focuser,
    count_tokens: Callable[[str], int],
) -> None:
    before = copy.deepcopy(base_retriever.documents)
    chain = build(base_retriever, focuser)

    synchronous = chain.invoke(QUERY)
    asynchronous = await chain.ainvoke(QUERY)

    for output in (synchronous, asynchronous):
        check_output(output, base_retriever, focuser, count_tokens)
    assert synchronous["documents"] == asynchronous["documents"]
    assert synchronous["prompt"] == asynchronous["prompt"]
    assert base_retriever.documents == before  # the stored (input) documents are untouched
