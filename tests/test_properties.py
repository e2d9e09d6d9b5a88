"""Properties of ``Focuser.focus`` and ``Focuser.rank`` for any input (hypothesis).

The scorer here is the tiny random model: these properties are about selection, windows,
bookkeeping and determinism, which hold whatever the model's attention says. A fixed example
budget and no deadline keep the run reproducible in CI (``derandomize=True``).
"""

from __future__ import annotations

import copy
import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragfocus import Focuser, LoadedModel, Passage
from ragfocus.types import ORDERS, FocusResult

WORDS = ["Paris", "tower", "the", "built", "1889", "Eiffel", "iron", "river", "Seine", "Gustave", "é", "東京", "مرحبا", "🙂"]
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)

texts = st.one_of(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=90).map(" ".join),
    st.sampled_from(["", "   ", "\n\t", "Paris.\x00\x07 Tower\u200b"]),
)
passages = st.one_of(
    texts,
    st.builds(
        Passage,
        text=texts,
        id=st.one_of(st.none(), st.text(min_size=1, max_size=5)),
        metadata=st.dictionaries(st.sampled_from(["source", "page", "tags"]), st.one_of(st.integers(), st.lists(st.text(max_size=3), max_size=2))),
        score=st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)),
    ),
)
inputs = st.lists(passages, max_size=9).flatmap(
    # duplicates: some inputs repeat earlier items
    lambda items: st.just(items) if not items else st.lists(st.sampled_from(items), max_size=3).map(lambda extra: items + extra)
)
queries = st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join)
limits = st.fixed_dictionaries(
    {},
    optional={
        "budget": st.integers(min_value=0, max_value=300),
        "top_k": st.integers(min_value=0, max_value=6),
        "order": st.sampled_from(ORDERS),
        "granularity": st.sampled_from(["passage", "sentence"]),
    },
)


@pytest.fixture(scope="module", params=[None, 160], ids=["one-window", "windows-of-160"])
def focuser(request: pytest.FixtureRequest, tiny_model: LoadedModel) -> Focuser:
    """The tiny model with its whole context, and with 160-token windows (many windows, long
    passages in parts)."""
    return Focuser(tiny_model, heads={1: [0, 1, 2, 3], 2: [4, 5]}, window_tokens=request.param)


def _count(focuser: Focuser, text: str) -> int:
    return len(focuser.loaded.tokenizer.encode(text, add_special_tokens=False)) if text else 0


def _as_passage(item: str | Passage) -> Passage:
    return item if isinstance(item, Passage) else Passage(item)


def _summary(result: FocusResult) -> tuple:
    return (
        result.context,
        [(p.index, p.rank, p.text, p.score) for p in result.kept],
        [(p.index, p.rank, p.score) for p in result.dropped],
        result.tokens_in,
        result.tokens_out,
    )


@EXAMPLES
@given(query=queries, items=inputs, options=limits)
def test_focus_keeps_its_promises(focuser: Focuser, query: str, items: list, options: dict) -> None:
    before = copy.deepcopy(items)
    result = focuser.focus(query, items, **options)

    assert items == before  # inputs are not mutated
    indices = sorted(p.index for p in result.kept + result.dropped)
    assert indices == list(range(len(items)))  # kept + dropped is exactly the input
    if options.get("budget") is not None:
        assert result.tokens_out <= options["budget"] and _count(focuser, result.context) <= options["budget"]
    if options.get("top_k") is not None:
        assert len(result.kept) <= options["top_k"]
    for scored in result.kept + result.dropped:
        given_passage = _as_passage(items[scored.index])
        assert scored.passage.text == given_passage.text
        assert scored.id == given_passage.id and scored.metadata == given_passage.metadata
        assert not math.isnan(scored.score)
        if scored.parts:  # parts cover the passage, in order, and the passage scores as its best part
            assert scored.parts[0].start == 0 and scored.parts[-1].end == len(given_passage.text)
            assert all(a.end == b.start for a, b in itertools.pairwise(scored.parts))
            assert scored.score == max(part.score for part in scored.parts)
    kept_texts = [p.passage.text for p in result.kept]
    assert len(kept_texts) == len(set(kept_texts))  # a duplicate is kept once
    assert all(text.strip() for text in kept_texts)
    assert _summary(focuser.focus(query, items, **options)) == _summary(result)  # same input, same output


@EXAMPLES
@given(query=queries, items=inputs)
def test_rank_is_a_permutation_and_orders_only_rearrange(focuser: Focuser, query: str, items: list) -> None:
    ranked = focuser.rank(query, items)
    assert sorted(p.index for p in ranked) == list(range(len(items)))
    assert [p.rank for p in ranked] == list(range(len(items)))
    scores = [p.score for p in ranked]
    assert scores == sorted(scores, reverse=True)
    by_text: dict[str, float] = {}
    for scored in ranked:  # duplicates are scored once: every copy carries the same model signals
        if scored.passage.text.strip():
            model_signals = {k: v for k, v in scored.signals.items() if k != "retriever"}
            assert by_text.setdefault(scored.passage.text, model_signals) == model_signals
    kept_sets = []
    for order in ORDERS:
        result = focuser.focus(query, items, order=order)
        kept_sets.append(sorted(p.index for p in result.kept))
        assert result.context == "\n\n".join(p.text for p in result.kept)
    assert all(kept == kept_sets[0] for kept in kept_sets)
