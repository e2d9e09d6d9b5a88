"""Twenty concurrent ``ainvoke`` calls: same results as one at a time, and the event loop
keeps running while the model works on a worker thread."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.documents import Document
from ragfocus import Focuser

from langchain_ragfocus import RagFocusCompressor, RagFocusRetriever
from tests.helpers import QUERY, WordOverlapRetriever, corpus

QUERIES = [
    QUERY,
    "Which museum in Paris has the most visitors?",
    "What is the highest mountain on Earth?",
    "When was Tower Bridge in London finished?",
]
CALLS = 20
TICK = 0.01
MAX_GAP = 0.25


def verdicts(documents: list[Document]) -> list[tuple[Any, ...]]:
    return [(d.id, d.metadata["ragfocus"]["rank"], d.metadata["ragfocus"]["score"]) for d in documents]


async def largest_tick_gap(work: Callable[[], Awaitable[Any]]) -> tuple[Any, float, float]:
    """Run ``work`` while a task ticks every 10 ms; return its result, the largest gap
    between two ticks, and how long the work took."""
    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(TICK)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(3 * TICK)
    started = time.perf_counter()
    result = await work()
    elapsed = time.perf_counter() - started
    await asyncio.sleep(3 * TICK)  # a tick after the work, so a stall at its end is measured
    stop.set()
    await ticking
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    return result, max(gaps), elapsed


async def test_twenty_concurrent_ainvokes_match_sequential_and_keep_the_loop_responsive(
    base_retriever: WordOverlapRetriever, focuser: Focuser
) -> None:
    retriever = RagFocusRetriever(base_retriever=base_retriever, k=4, top_k=3, focuser=focuser)
    queries = [QUERIES[i % len(QUERIES)] for i in range(CALLS)]
    sequential = {query: verdicts(retriever.invoke(query)) for query in QUERIES}

    results, max_gap, elapsed = await largest_tick_gap(
        lambda: asyncio.gather(*(retriever.ainvoke(query) for query in queries))
    )

    assert [verdicts(documents) for documents in results] == [sequential[query] for query in queries]
    assert max_gap < MAX_GAP, f"the event loop stalled for {max_gap:.3f} s during {elapsed:.2f} s of model work"
    assert elapsed > 4 * max_gap  # the ticker ran all through the work, not only around it


async def test_the_ticker_sees_work_that_blocks_the_loop(focuser: Focuser) -> None:
    """The control: the same model work called synchronously on the loop stalls the ticker."""
    compressor = RagFocusCompressor(focuser=focuser)
    documents = corpus()

    async def blocking() -> Any:
        return compressor.compress_documents(documents, QUERY)

    async def off_the_loop() -> Any:
        return await compressor.acompress_documents(documents, QUERY)

    _, blocked_gap, blocked_elapsed = await largest_tick_gap(blocking)
    _, free_gap, _ = await largest_tick_gap(off_the_loop)
    assert blocked_gap >= 0.9 * blocked_elapsed
    assert free_gap < blocked_gap
