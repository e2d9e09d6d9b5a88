"""The host's share of a batch (``ragfocus.preparation``), in this thread and in a child process
(``ragfocus.preparation_process``): the same prompts, distraction prompts and BM25 either way."""

from __future__ import annotations

import itertools
import logging

import pytest

from ragfocus import Focuser, LoadedModel
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.preparation import merge_prepared, prepare_inputs
from ragfocus.preparation_process import PreparationPool, PreparationProcess
from ragfocus.prompt import TokenizedPrompt
from ragfocus.scoring.lexical import bm25_scores


@pytest.fixture(scope="module")
def dev_questions():
    return hotpotqa(60, 6)


def test_prepare_inputs_splits_batches_and_keeps_errors_in_place(default_model: LoadedModel) -> None:
    real = default_model.tokenizer

    class FailsOnOneQuery:
        """The real tokenizer, through ``__call__``, except for one query."""

        def __call__(self, texts, **kwargs):
            if any("poisoned" in text for text in texts):
                raise ValueError("cannot tokenize the poisoned query")
            return real(texts, **kwargs)

    inputs = [
        ("Where is Paris?", ["Paris is the capital of France.", "The Nile flows north."]),
        ("poisoned", ["Some text."]),
        ("Which river?", []),
        ("Which river is long?", ["The Nile is long. " * 80]),  # over the prompt limit below
    ]
    prepared = prepare_inputs(FailsOnOneQuery(), inputs, prompt_tokens=200, sentences=False, distraction=True)
    assert isinstance(prepared.prompts[0], TokenizedPrompt)
    assert isinstance(prepared.prompts[1], ValueError) and "poisoned" in str(prepared.prompts[1])
    assert prepared.prompts[2] is None
    assert isinstance(prepared.prompts[3], TokenizedPrompt) and prepared.prompts[3].total_tokens > 200
    assert prepared.together == [0]
    assert prepared.lexical == [bm25_scores(*inputs[0])]
    assert prepared.distraction is not None and prepared.distraction.passages == [2]
    unlimited = prepare_inputs(real, [inputs[0], inputs[3]], prompt_tokens=None, sentences=False, distraction=False)
    assert unlimited.together == [0, 1] and unlimited.distraction is None
    sentences = prepare_inputs(real, [inputs[0]], prompt_tokens=None, sentences=True, distraction=True)
    assert sentences.together == [] and sentences.distraction is None and sentences.lexical == []


def test_the_child_process_prepares_what_this_thread_prepares(default_model: LoadedModel, dev_questions) -> None:
    inputs = [(q.question, q.paragraphs[:5]) for q in dev_questions] + [("Which river?", [])]
    options = {"prompt_tokens": 700, "sentences": False, "distraction": True}
    here = prepare_inputs(default_model.tokenizer, inputs, **options)
    assert 0 < len(here.together) < len(dev_questions)  # some of these prompts are over 700 tokens
    process = PreparationProcess(default_model.tokenizer)
    try:
        assert process.wait_ready(120), "the child did not start"
        first = process.submit(inputs, **options)
        second = process.submit(inputs[:2], prompt_tokens=None, sentences=False, distraction=False)
        assert first.result(timeout=120) == here
        assert second.result(timeout=120) == prepare_inputs(default_model.tokenizer, inputs[:2], prompt_tokens=None, sentences=False, distraction=False)
    finally:
        process.close()
    assert not process.alive
    with pytest.raises(RuntimeError, match="closed"):
        process.submit(inputs, **options).result(timeout=10)


def test_rank_many_through_the_child_process_equals_this_thread(
    default_model: LoadedModel, dev_questions, caplog: pytest.LogCaptureFixture
) -> None:
    """The default Focuser (distraction on), its batches tokenized in a child process as on a
    GPU, against the same Focuser tokenizing in its own thread: the same computation, so the
    same scores; and after the child dies, the batches are prepared here, with a warning."""
    requests = [(q.question, q.paragraphs[:4]) for q in dev_questions[:3]]
    here = Focuser(default_model, host_process=False)
    assert here.preparation is None
    expected = here.rank_many(requests, batch_size=1)
    there = Focuser(default_model, host_process=True)
    process = there.preparation
    assert process is not None and process.wait_ready(120)
    answered = process.prepared
    batched = there.rank_many(requests, batch_size=1)  # three batches, tokenized ahead in the child
    assert process.prepared - answered == len(requests)
    for alone, together in zip(expected, batched):
        assert [(p.index, p.score, p.signals) for p in together] == [(p.index, p.score, p.signals) for p in alone]
    # With the children, the first batch is a quarter of the others, so the device starts sooner.
    assert there.pipeline._first_batch_size(64, 1000) == 16 and there.pipeline._first_batch_size(64, 64) == 64
    assert here.pipeline._first_batch_size(64, 1000) == 64
    uneven = there.rank_many(requests, batch_size=2)  # batches of 1, then 2: the same up to rounding
    for alone, together in zip(expected, uneven):
        assert [p.index for p in together] == [p.index for p in alone]
        assert [p.score for p in together] == pytest.approx([p.score for p in alone], abs=1e-4)
    for child in process.processes:
        child._process.kill()
        child._process.wait()
    with caplog.at_level(logging.WARNING, logger="ragfocus"):
        for child in process.processes:
            child._reader.join(timeout=30)
        after = there.rank_many(requests, batch_size=1)
    assert "preparation process" in caplog.text
    assert not process.alive
    assert [[(p.index, p.score) for p in ranked] for ranked in after] == [[(p.index, p.score) for p in ranked] for ranked in expected]


def test_merged_slices_equal_the_whole_batch(default_model: LoadedModel, dev_questions) -> None:
    inputs = [(q.question, q.paragraphs[:3]) for q in dev_questions] + [("Which river?", [])]
    for distraction in (True, False):
        options = {"prompt_tokens": 500, "sentences": False, "distraction": distraction}
        whole = prepare_inputs(default_model.tokenizer, inputs, **options)
        for cuts in ([3], [1, 6], [2, 4, 6]):
            bounds = [0, *cuts, len(inputs)]
            parts = [prepare_inputs(default_model.tokenizer, inputs[a:b], **options) for a, b in itertools.pairwise(bounds)]
            assert merge_prepared(parts) == whole, (distraction, cuts)


def test_the_pool_splits_a_batch_between_its_children_and_outlives_one(default_model: LoadedModel, dev_questions) -> None:
    inputs = [(q.question, q.paragraphs[:3]) for q in dev_questions]
    options = {"prompt_tokens": None, "sentences": False, "distraction": True}
    whole = prepare_inputs(default_model.tokenizer, inputs, **options)
    pool = PreparationPool(default_model.tokenizer, 2)
    try:
        assert pool.wait_ready(120) and all(child.ready for child in pool.processes)
        assert pool.submit(inputs, **options).result(timeout=120) == whole
        assert [child.prepared for child in pool.processes] == [1, 1]
        first = pool.processes[0]
        first._process.kill()
        first._process.wait()
        first._reader.join(timeout=30)
        assert not first.ready and pool.alive
        assert pool.submit(inputs, **options).result(timeout=120) == whole  # all of it to the other child
        assert pool.processes[1].prepared == 2
    finally:
        pool.close()
    assert not pool.alive
    with pytest.raises(ValueError, match="at least 1"):
        PreparationPool(default_model.tokenizer, 0)
