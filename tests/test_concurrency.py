"""One ``Focuser`` shared by many threads; memory over a long run."""

from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import psutil

from ragfocus import Focuser, LoadedModel, Passage
from ragfocus.types import FocusResult

THREADS = 8
CALLS = 50
QUESTIONS = [
    "Who designed the Eiffel Tower?",
    "When was the Eiffel Tower finished?",
    "What river flows through Paris?",
    "Which city hosts the Louvre?",
    "What is the tower made of?",
    "Who was Gustave Eiffel?",
    "How tall is the Eiffel Tower?",
    "Where is the Statue of Liberty?",
]
PASSAGES = [
    Passage("The Eiffel Tower was designed by the engineering firm of Gustave Eiffel.", id="design", metadata={"n": 1}),
    Passage("It was finished in March 1889 for the World's Fair. It is made of wrought iron.", id="finish"),
    Passage("The Seine flows through Paris, past the Louvre museum.", id="seine", score=-2.5),
    "The Statue of Liberty stands in New York Harbor; Eiffel built its frame.",
]


def _summary(result: FocusResult) -> tuple:
    return (result.context, [(p.index, p.score, tuple(sorted(p.signals.items()))) for p in result.kept + result.dropped])


def _call(focuser: Focuser, number: int) -> tuple:
    options = [{"budget": 40}, {"budget": 25, "granularity": "sentence"}, {"top_k": 2, "order": "edges"}][number % 3]
    return _summary(focuser.focus(QUESTIONS[number % len(QUESTIONS)], PASSAGES, **options))


def test_eight_threads_of_fifty_calls_match_sequential_calls(tiny_model: LoadedModel) -> None:
    """Thread safety is plumbing: the tiny model runs the same code paths (capture, fusion,
    sentence splitting, token counting) in milliseconds. The same test on the default model
    (about 1 s a call on 2 cores) is reported in docs/robustness.md."""
    focuser = Focuser(tiny_model, heads={1: [0, 1], 2: [2, 3]}, sort_rounds=1)
    expected = {number: _call(focuser, number) for number in range(THREADS * 3)}
    failures: list[BaseException] = []
    mismatches: list[int] = []
    start = threading.Barrier(THREADS)

    def worker(thread: int) -> None:
        start.wait()
        for call in range(CALLS):
            number = (thread * CALLS + call) % len(expected)
            try:
                if _call(focuser, number) != expected[number]:
                    mismatches.append(number)
            except BaseException as error:  # noqa: BLE001 - every failure is reported below
                failures.append(error)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, range(THREADS)))
    assert not failures, failures[:3]
    assert not mismatches


def test_memory_stays_flat_over_a_thousand_calls(tiny_model: LoadedModel) -> None:
    focuser = Focuser(tiny_model, heads={1: [0, 1], 2: [2, 3]})
    process = psutil.Process()
    for number in range(100):  # warm-up: allocator pools and caches fill here
        _call(focuser, number)
    gc.collect()
    settled = process.memory_info().rss
    for number in range(1000):
        _call(focuser, number)
    gc.collect()
    grown = process.memory_info().rss - settled
    assert grown < 40 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 1,000 calls"
