"""Fields: defaults, validation at construction, extra="forbid", docstrings, per-call options."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from langchain_ragfocus import RagFocusCompressor, RagFocusReorder, RagFocusRetriever
from tests.helpers import QUERY, WordOverlapFocuser, WordOverlapRetriever, corpus

SELECTION_FIELDS = ("budget", "ratio", "top_k", "threshold", "order", "tokenizer", "separator", "focuser")


def test_building_a_component_loads_no_model(base_retriever: WordOverlapRetriever) -> None:
    # the autouse fixture makes default_focuser() raise: none of these may call it
    assert RagFocusCompressor().focuser is None
    assert RagFocusReorder().focuser is None
    assert RagFocusRetriever(base_retriever=base_retriever).focuser is None


def test_defaults_are_those_of_focus(base_retriever: WordOverlapRetriever) -> None:
    for component in (RagFocusCompressor(), RagFocusRetriever(base_retriever=base_retriever)):
        assert (component.budget, component.ratio, component.top_k, component.threshold) == (None, None, None, None)
        assert (component.order, component.tokenizer, component.separator) == ("relevance", None, "\n\n")
    assert RagFocusReorder().order == "edges"
    retriever = RagFocusRetriever(base_retriever=base_retriever)
    assert (retriever.k, retriever.k_argument) == (None, "k")


@pytest.mark.parametrize(
    "options",
    [
        {"budget": 0},
        {"budget": 300},
        {"ratio": 0},
        {"ratio": 0.5},
        {"ratio": 1},
        {"top_k": 0},
        {"top_k": 3},
        {"threshold": 0.0},
        {"threshold": -1},
        {"order": "original"},
        {"order": "relevance"},
        {"order": "attention"},
        {"order": "edges"},
        {"separator": "\n---\n"},
        {"tokenizer": len},
        {"budget": 100, "top_k": 2, "threshold": 0.1, "order": "edges"},
    ],
)
def test_valid_options_are_kept(options: dict[str, Any], base_retriever: WordOverlapRetriever) -> None:
    for component in (RagFocusCompressor(**options), RagFocusRetriever(base_retriever=base_retriever, **options)):
        for name, value in options.items():
            assert getattr(component, name) == value


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"budget": -1}, "budget"),
        ({"budget": 1.5}, "budget"),
        ({"budget": True}, "budget"),
        ({"budget": "300"}, "budget"),
        ({"ratio": 2}, "ratio"),
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": "0.5"}, "ratio"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.0}, "top_k"),
        ({"threshold": math.nan}, "threshold"),
        ({"threshold": math.inf}, "threshold"),
        ({"order": "best"}, "order"),
        ({"separator": 3}, "separator"),
        ({"budget": 100, "ratio": 0.5}, "either budget"),
        ({"tokenizer": 42}, "tokenizer must be"),
        ({"focuser": "smollm2"}, "focuser"),
    ],
)
def test_bad_options_fail_at_construction(
    options: dict[str, Any], message: str, base_retriever: WordOverlapRetriever
) -> None:
    with pytest.raises(ValidationError, match=message):
        RagFocusCompressor(**options)
    with pytest.raises(ValidationError, match=message):
        RagFocusRetriever(base_retriever=base_retriever, **options)


@pytest.mark.parametrize(("options", "message"), [({"order": "best"}, "order"), ({"focuser": object()}, "focuser")])
def test_bad_reorder_options_fail_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RagFocusReorder(**options)


@pytest.mark.parametrize(("k", "message"), [(0, "k"), (-2, "k"), (2.0, "k"), (True, "k")])
def test_bad_k_fails_at_construction(k: object, message: str, base_retriever: WordOverlapRetriever) -> None:
    with pytest.raises(ValidationError, match=message):
        RagFocusRetriever(base_retriever=base_retriever, k=k)


def test_the_retriever_needs_a_base_retriever() -> None:
    with pytest.raises(ValidationError, match="base_retriever"):
        RagFocusRetriever()  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="base_retriever"):
        RagFocusRetriever(base_retriever=corpus())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("component", "typo"),
    [
        (RagFocusCompressor, {"budgett": 100}),
        (RagFocusCompressor, {"k": 4}),
        (RagFocusReorder, {"top_k": 3}),
        (RagFocusReorder, {"budget": 100}),
        (RagFocusRetriever, {"topk": 3}),
    ],
)
def test_unknown_fields_are_refused(
    component: type[BaseModel], typo: dict[str, Any], base_retriever: WordOverlapRetriever
) -> None:
    extra = {"base_retriever": base_retriever} if component is RagFocusRetriever else {}
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        component(**extra, **typo)


@pytest.mark.parametrize("component", [RagFocusCompressor, RagFocusReorder, RagFocusRetriever])
def test_model_config_forbids_extra_and_allows_a_focuser(component: type[BaseModel]) -> None:
    assert component.model_config["extra"] == "forbid"
    assert component.model_config["arbitrary_types_allowed"] is True


@pytest.mark.parametrize("component", [RagFocusCompressor, RagFocusReorder, RagFocusRetriever])
def test_every_option_has_a_docstring(component: type[BaseModel]) -> None:
    own = [name for name in (*SELECTION_FIELDS, "base_retriever", "k", "k_argument") if name in component.model_fields]
    assert "focuser" in own and "order" in own
    for name in own:
        description = component.model_fields[name].description
        assert description and len(description) > 20, f"{component.__name__}.{name} has no docstring"


def test_a_focuser_instance_is_accepted(fake_focuser: WordOverlapFocuser) -> None:
    compressor = RagFocusCompressor(focuser=fake_focuser)
    assert compressor.get_focuser() is fake_focuser


def test_a_callable_tokenizer_counts_the_budget(fake_focuser: WordOverlapFocuser) -> None:
    characters = RagFocusCompressor(focuser=fake_focuser, budget=80, tokenizer=len)
    kept = characters.compress_documents(corpus(), QUERY)
    assert sum(len(document.page_content) for document in kept) + 2 * (len(kept) - 1) <= 80
    assert len(kept) == 1


def test_per_call_options_replace_the_fields(
    fake_focuser: WordOverlapFocuser, base_retriever: WordOverlapRetriever
) -> None:
    retriever = RagFocusRetriever(base_retriever=base_retriever, focuser=fake_focuser, k=4, ratio=0.5, order="edges")
    assert retriever.selection_options({"budget": 20}) == {
        "budget": 20,
        "ratio": None,
        "top_k": None,
        "threshold": None,
        "order": "edges",
        "separator": "\n\n",
        "granularity": "passage",
    }
    assert retriever.selection_options({"ratio": 0.2})["budget"] is None
    with pytest.raises(TypeError, match="unknown focus options"):
        retriever.selection_options({"rate": 0.2})
    assert len(retriever.invoke(QUERY, ratio=1.0)) == 4
    assert len(retriever.invoke(QUERY, ratio=1.0, top_k=1)) == 1
    assert len(retriever.invoke(QUERY, ratio=1.0, k=2)) == 2
    ordered = retriever.invoke(QUERY, ratio=1.0, order="relevance")
    assert [document.metadata["ragfocus"]["rank"] for document in ordered] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"k": 0}, ValueError, "k must be >= 1"),
        ({"k": "3"}, TypeError, "k must be an int"),
        ({"budget": -5}, ValueError, "budget"),
        ({"order": "best"}, ValueError, "order"),
        ({"budget": 10, "ratio": 0.5}, ValueError, "either budget"),
    ],
)
def test_bad_per_call_options_raise_clear_errors(
    options: dict[str, Any],
    error: type[Exception],
    message: str,
    fake_focuser: WordOverlapFocuser,
    base_retriever: WordOverlapRetriever,
) -> None:
    retriever = RagFocusRetriever(base_retriever=base_retriever, focuser=fake_focuser)
    with pytest.raises(error, match=message):
        retriever.invoke(QUERY, **options)
    assert base_retriever.calls == []  # refused before retrieving anything


def test_k_goes_to_the_base_retriever_and_other_keywords_too(
    fake_focuser: WordOverlapFocuser, base_retriever: WordOverlapRetriever
) -> None:
    retriever = RagFocusRetriever(base_retriever=base_retriever, focuser=fake_focuser, k=3)
    assert len(retriever.invoke(QUERY)) == 3
    assert len(retriever.invoke(QUERY, k=5, flavour="vanilla")) == 5
    assert base_retriever.calls[-2:] == [
        {"query": QUERY, "k": 3},
        {"query": QUERY, "k": 5, "flavour": "vanilla"},
    ]


def test_k_cuts_what_a_base_retriever_returns_when_it_ignores_k(fake_focuser: WordOverlapFocuser) -> None:
    base = WordOverlapRetriever(documents=corpus(), k=6)
    retriever = RagFocusRetriever(base_retriever=base, focuser=fake_focuser, k=2, k_argument=None)
    documents = retriever.invoke(QUERY)
    assert len(documents) == 2
    assert base.calls == [{"query": QUERY, "k": None}]
    assert {document.metadata["ragfocus"]["index"] for document in documents} == {0, 1}


def test_k_argument_names_the_base_retrievers_keyword(fake_focuser: WordOverlapFocuser) -> None:
    base = WordOverlapRetriever(documents=corpus(), k=6)
    retriever = RagFocusRetriever(base_retriever=base, focuser=fake_focuser, k=3, k_argument="limit")
    assert len(retriever.invoke(QUERY)) == 3
    assert base.calls == [{"query": QUERY, "k": None, "limit": 3}]


def test_values_assigned_later_are_checked_when_the_component_runs(
    fake_focuser: WordOverlapFocuser, base_retriever: WordOverlapRetriever
) -> None:
    compressor = RagFocusCompressor(focuser=fake_focuser, budget=100)
    compressor.budget = -1
    with pytest.raises(ValueError, match="budget must be >= 0"):
        compressor.compress_documents(corpus(), QUERY)
    compressor.budget, compressor.order = None, "best"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="order='best' is not one of"):
        compressor.compress_documents(corpus(), QUERY)
    retriever = RagFocusRetriever(base_retriever=base_retriever, focuser=fake_focuser, k=3)
    retriever.k = 0
    with pytest.raises(ValueError, match="k must be >= 1"):
        retriever.invoke(QUERY)


def test_a_tokenizer_assigned_later_is_used(fake_focuser: WordOverlapFocuser) -> None:
    compressor = RagFocusCompressor(focuser=fake_focuser, budget=80)
    assert compressor.budget_counter() is None
    compressor.tokenizer = len
    counter = compressor.budget_counter()
    assert counter is not None and counter("four") == 4 and compressor.budget_counter() is counter
    kept = compressor.compress_documents(corpus(), QUERY)
    assert sum(len(document.page_content) for document in kept) + 2 * (len(kept) - 1) <= 80
