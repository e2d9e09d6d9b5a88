"""Every row of docs/robustness.md: what each kind of bad or unusual input gets.

Plumbing rows run on the tiny random model; the rows about long inputs (windows, parts) run
on the real default model, since there the ranking itself is what is checked.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from typing import ClassVar

import pytest

from ragfocus import Focuser, LoadedModel, Passage
from ragfocus.evaluation.datasets import hotpotqa

QUERY = "Who designed the Eiffel Tower?"
TEXTS = [
    "The Eiffel Tower was designed by the firm of Gustave Eiffel.",
    "The Seine flows through Paris.",
    "Bananas are rich in potassium.",
]


@pytest.fixture(scope="module")
def tiny(tiny_model: LoadedModel) -> Focuser:
    return Focuser(tiny_model, heads={1: [0, 1, 2, 3], 2: [4, 5]})


# -- the passages argument ---------------------------------------------------------------


@pytest.mark.parametrize("passages", ["one string", {"a": 1}, None, 42], ids=["str", "dict", "None", "int"])
def test_passages_that_are_not_a_list_are_a_type_error(tiny: Focuser, passages: object) -> None:
    with pytest.raises(TypeError, match="passages must be a list"):
        tiny.focus(QUERY, passages)  # type: ignore[arg-type]


@pytest.mark.parametrize("item", [None, 3.5, {"text": "x"}, b"bytes"], ids=["None", "float", "dict", "bytes"])
def test_an_item_of_the_wrong_type_is_named_by_position(tiny: Focuser, item: object) -> None:
    with pytest.raises(TypeError, match=r"passages\[1\] is"):
        tiny.rank(QUERY, [TEXTS[0], item, TEXTS[1]])


def test_empty_list_gives_empty_results(tiny: Focuser) -> None:
    assert tiny.rank(QUERY, []) == []
    result = tiny.focus(QUERY, [], budget=10)
    assert (result.context, result.kept, result.dropped, result.tokens_in, result.tokens_out) == ("", [], [], 0, 0)


def test_empty_and_whitespace_passages_rank_last_and_are_never_kept(tiny: Focuser) -> None:
    ranked = tiny.rank(QUERY, ["", TEXTS[0], "  \n\t", TEXTS[1]])
    assert [p.index for p in ranked[-2:]] == [0, 2]
    assert all(p.score == -math.inf and all(math.isnan(v) for v in p.signals.values()) for p in ranked[-2:])
    result = tiny.focus(QUERY, ["", TEXTS[0], "  \n\t"])
    assert [p.index for p in result.kept] == [1] and sorted(p.index for p in result.dropped) == [0, 2]


def test_duplicates_are_scored_once_reported_at_every_position_and_kept_once(tiny: Focuser) -> None:
    items = [TEXTS[0], Passage(TEXTS[1], id="a"), TEXTS[0], Passage(TEXTS[1], id="b", metadata={"k": 1})]
    ranked = {p.index: p for p in tiny.rank(QUERY, items)}
    assert set(ranked) == {0, 1, 2, 3}
    assert ranked[0].score == ranked[2].score and ranked[0].signals == ranked[2].signals
    assert ranked[1].score == ranked[3].score and ranked[3].id == "b" and ranked[3].metadata == {"k": 1}
    result = tiny.focus(QUERY, items)
    assert sorted(p.index for p in result.kept) == [0, 1]  # the first copy of each text
    assert sorted(p.index for p in result.dropped) == [2, 3]
    assert result.context.count(TEXTS[0]) == 1


def test_duplicates_fuse_with_their_best_retriever_score(default_model: LoadedModel) -> None:
    focuser = Focuser(default_model, distraction=False)
    items = [Passage(TEXTS[0], score=0.1), Passage(TEXTS[1], score=0.5), Passage(TEXTS[0], score=0.9)]
    ranked = {p.index: p for p in focuser.rank(QUERY, items)}
    assert ranked[0].score == ranked[2].score
    assert ranked[0].signals["retriever"] == 0.1 and ranked[2].signals["retriever"] == 0.9


# -- the query -----------------------------------------------------------------------------


@pytest.mark.parametrize("query", [None, 3, ["q"]], ids=["None", "int", "list"])
def test_a_query_that_is_not_a_string_is_a_type_error(tiny: Focuser, query: object) -> None:
    with pytest.raises(TypeError, match="query must be a str"):
        tiny.rank(query, TEXTS)  # type: ignore[arg-type]


@pytest.mark.parametrize("query", ["", "   \n"])
def test_an_empty_query_is_a_value_error(tiny: Focuser, query: str) -> None:
    with pytest.raises(ValueError, match="query is empty"):
        tiny.focus(query, TEXTS)


def test_a_query_that_leaves_no_room_is_a_value_error(tiny_model: LoadedModel) -> None:
    focuser = Focuser(tiny_model, heads={1: [0]}, window_tokens=256)
    with pytest.raises(ValueError, match="no room is left for a passage"):
        focuser.rank("why " * 300, TEXTS * 20)


def test_a_long_query_that_fits_is_ranked(tiny: Focuser) -> None:
    ranked = tiny.rank("Who designed the tower? " * 100, TEXTS)
    assert sorted(p.index for p in ranked) == [0, 1, 2]


# -- odd text ------------------------------------------------------------------------------


def test_control_characters_and_mixed_scripts_are_scored_as_given(tiny: Focuser) -> None:
    odd = [
        "Eiffel\x00 designed\x07 the\u200b tower\ufeff.",
        "東京タワーは1958年に完成した。 مرحبا بالعالم. Привет 🙂",
        "\u202eRTL override\u202c and combining e\u0301",
    ]
    result = tiny.focus(QUERY, odd)
    assert sorted(p.index for p in result.kept) == [0, 1, 2]
    assert {p.text for p in result.kept} == set(odd)  # returned unchanged, not cleaned
    assert all(math.isfinite(p.score) for p in result.kept)


# -- budgets and options -------------------------------------------------------------------


def test_a_budget_of_zero_keeps_nothing_and_warns(tiny: Focuser, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ragfocus"):
        result = tiny.focus(QUERY, TEXTS, budget=0)
    assert (result.context, result.kept, result.tokens_out) == ("", [], 0)
    assert len(result.dropped) == 3 and "below every passage" in caplog.text


def test_a_budget_below_the_smallest_passage_keeps_nothing_but_sentences_can_fit(tiny: Focuser) -> None:
    two_sentences = ["The tower is iron. It was designed by Gustave Eiffel's firm in 1884 for the fair."]
    assert tiny.focus(QUERY, two_sentences, budget=6).kept == []
    result = tiny.focus(QUERY, two_sentences, budget=6, granularity="sentence")
    assert result.context == "The tower is iron." and result.tokens_out <= 6


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"budget": -1}, ValueError, "budget must be >= 0"),
        ({"budget": 1.5}, TypeError, "budget must be an int"),
        ({"budget": True}, TypeError, "budget must be an int"),
        ({"budget": 10, "ratio": 0.5}, ValueError, "either budget"),
        ({"ratio": 1.5}, ValueError, r"ratio must be in \[0, 1\]"),
        ({"top_k": -2}, ValueError, "top_k must be >= 0"),
        ({"threshold": math.nan}, ValueError, "threshold must not be NaN"),
        ({"order": "random"}, ValueError, "order='random' is not one of"),
        ({"granularity": "word"}, ValueError, "granularity='word' is not one of"),
        ({"separator": None}, TypeError, "separator must be a str"),
        ({"bugdet": 10}, TypeError, "unexpected keyword argument 'bugdet'"),
    ],
)
def test_bad_options_name_the_problem(tiny: Focuser, options: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        tiny.focus(QUERY, TEXTS, **options)


@pytest.mark.parametrize(("score", "error"), [(math.nan, ValueError), (math.inf, ValueError), ("high", TypeError)])
def test_a_retriever_score_that_cannot_be_ranked_is_refused(score: object, error: type) -> None:
    with pytest.raises(error, match="Passage.score"):
        Passage("text", score=score)  # type: ignore[arg-type]


def test_a_passage_changed_after_construction_is_named_by_position(tiny: Focuser) -> None:
    passage = Passage("text", score=1.0)
    object.__setattr__(passage, "score", math.nan)
    with pytest.raises(ValueError, match=r"passages\[1\]: Passage.score must be finite"):
        tiny.rank(QUERY, [TEXTS[0], passage])


def test_negative_retriever_scores_are_used_as_given(default_model: LoadedModel) -> None:
    focuser = Focuser(default_model, distraction=False)
    items = [Passage(text, score=-10.0 * (number + 1)) for number, text in enumerate(TEXTS)]
    ranked = focuser.rank(QUERY, items)
    assert {p.index: p.signals["retriever"] for p in ranked} == {0: -10.0, 1: -20.0, 2: -30.0}
    assert ranked[0].index == 0


def test_metadata_that_is_not_a_mapping_is_a_type_error(tiny: Focuser) -> None:
    class Document:
        page_content = "text"
        metadata: ClassVar[list[str]] = ["not", "a", "mapping"]

    with pytest.raises(TypeError, match=r"passages\[0\]\.metadata is list"):
        tiny.rank(QUERY, [Document()])


@pytest.mark.parametrize(("value", "error"), [(10, ValueError), (10**6, ValueError), ("big", TypeError)])
def test_bad_window_sizes_are_refused(tiny_model: LoadedModel, value: object, error: type) -> None:
    with pytest.raises(error, match="window_tokens"):
        Focuser(tiny_model, heads={1: [0]}, window_tokens=value)  # type: ignore[arg-type]


# -- long inputs (real model) --------------------------------------------------------------


@pytest.fixture(scope="module")
def windowed(default_model: LoadedModel) -> Focuser:
    """The default model with 1,024-token windows, so a HotpotQA question needs several."""
    return Focuser(default_model, distraction=False, window_tokens=1024, final_round=8)


def test_passages_past_one_window_are_ranked_as_a_whole(windowed: Focuser) -> None:
    (question,) = hotpotqa(2000, 1)
    before = copy.deepcopy(question.paragraphs)
    ranked = windowed.rank(question.question, question.paragraphs)
    assert question.paragraphs == before
    assert sorted(p.index for p in ranked) == list(range(len(question.paragraphs)))
    assert all("window_score" in p.signals for p in ranked)
    assert question.gold <= {p.index for p in ranked[:4]}  # both gold paragraphs rank in the top 4 of 10
    scores = [p.score for p in ranked]
    assert scores == sorted(scores, reverse=True)


def test_a_passage_longer_than_a_window_is_scored_in_parts(windowed: Focuser) -> None:
    questions = hotpotqa(2001, 2)
    long_text = " ".join(paragraph for question in questions for paragraph in question.paragraphs)
    gold = questions[0].paragraphs[min(questions[0].gold)]
    ranked = windowed.rank(questions[0].question, [long_text, "Bananas are rich in potassium.", gold])
    by_index = {p.index: p for p in ranked}
    parts = by_index[0].parts
    assert len(parts) >= 3
    assert parts[0].start == 0 and parts[-1].end == len(long_text)  # every character is scored
    assert all(a.end == b.start for a, b in itertools.pairwise(parts))
    assert by_index[0].score == max(part.score for part in parts)
    assert by_index[0].text == long_text  # reported whole, never truncated
    best = max(parts, key=lambda part: part.score)
    assert gold[:40] in long_text[best.start : best.end] or by_index[2].rank < by_index[1].rank
    assert by_index[1].rank == 2  # the unrelated passage is last


def test_pooled_evaluation_reports_every_method_and_the_windows(tiny_model: LoadedModel) -> None:
    from ragfocus.evaluation.pooled_eval import evaluate_pooled, pool_of, render_pooled

    questions = hotpotqa(2000, 2)
    pool = pool_of(questions)
    assert len(pool.paragraphs) == sum(len(q.paragraphs) for q in questions)
    assert all(pool.paragraphs[position] == questions[1].paragraphs[position - len(questions[0].paragraphs)] for position in pool.gold[1])
    focuser = Focuser(tiny_model, heads={1: [0, 1]}, window_tokens=512, final_round=4)
    report = evaluate_pooled(focuser, questions, k=10, minilm=False, progress=False)
    assert report.windows > 1 and report.paragraphs == len(pool.paragraphs)
    assert set(report.hits) == {"ragfocus", "bm25"} and all(len(v) == 2 for v in report.per_question.values())
    assert report.seconds_per_query > 0 and "both gold paragraphs in the top 10" in render_pooled(report)
