"""Focuser.rank / Focuser.focus / focus() on the real default model."""

from __future__ import annotations

import copy
import math
import threading

import pytest

from ragfocus import Focuser, FocusResult, Passage, ScoredPassage, focus
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.focuser import SIGNAL_NAMES


class Document:
    """The shape of a LangChain Document, without importing LangChain."""

    def __init__(self, page_content: str, metadata: dict, id: str | None = None) -> None:
        self.page_content = page_content
        self.metadata = metadata
        self.id = id


@pytest.fixture(scope="module")
def question():
    return hotpotqa(5, 1)[0]


def test_rank_scores_every_passage_best_first(default_focuser: Focuser, question) -> None:
    ranked = default_focuser.rank(question.question, question.paragraphs)
    assert sorted(p.index for p in ranked) == list(range(len(question.paragraphs)))
    assert [p.rank for p in ranked] == list(range(len(ranked)))
    assert [p.score for p in ranked] == sorted((p.score for p in ranked), reverse=True)
    for passage in ranked:
        assert isinstance(passage, ScoredPassage)
        assert passage.text == question.paragraphs[passage.index]
        assert set(passage.signals) == set(default_focuser.signal_names) and set(SIGNAL_NAMES) <= set(passage.signals)
        calibrated = passage.signals["query_attention"] - passage.signals["null_attention"]
        assert math.isclose(passage.signals["retrieval_heads"], calibrated, abs_tol=1e-9)
    assert len({round(p.score, 6) for p in ranked}) == len(ranked)  # real, distinct scores


def test_rank_is_deterministic(default_focuser: Focuser, question) -> None:
    first = default_focuser.rank(question.question, question.paragraphs)
    second = default_focuser.rank(question.question, question.paragraphs)
    assert [(p.index, p.score) for p in first] == [(p.index, p.score) for p in second]


def test_focus_keeps_within_budget_and_accounts_for_everything(default_focuser: Focuser, question) -> None:
    passages = [Passage(text, id=f"p{i}", metadata={"title": question.titles[i], "nested": {"n": i}}, score=1.0 - i / 10)
                for i, text in enumerate(question.paragraphs)]
    before = copy.deepcopy(passages)
    result = default_focuser.focus(question.question, passages, budget=300)
    assert isinstance(result, FocusResult)
    count = lambda text: len(default_focuser.loaded.tokenizer.encode(text, add_special_tokens=False))
    assert result.tokens_out == count(result.context) <= 300
    assert result.tokens_in == count("\n\n".join(question.paragraphs))
    assert result.budget == 300 and result.seconds > 0
    assert sorted(p.index for p in result.kept + result.dropped) == list(range(10))
    assert result.context == "\n\n".join(p.text for p in result.kept)
    assert [p.rank for p in result.kept] == sorted(p.rank for p in result.kept)  # order="relevance"
    for scored in result.kept + result.dropped:
        assert scored.id == f"p{scored.index}"
        assert scored.metadata == {"title": question.titles[scored.index], "nested": {"n": scored.index}}
        assert scored.signals["retriever"] == pytest.approx(1.0 - scored.index / 10)
    assert passages == before  # inputs untouched
    result.kept[0].metadata["nested"]["n"] = -1
    assert passages[result.kept[0].index].metadata["nested"]["n"] == result.kept[0].index


@pytest.mark.parametrize("order", ["original", "relevance", "attention", "edges"])
def test_every_order_is_a_permutation_of_the_kept(default_focuser: Focuser, question, order: str) -> None:
    result = default_focuser.focus(question.question, question.paragraphs, top_k=5, order=order)
    ranks = [p.rank for p in result.kept]
    assert sorted(ranks) == [0, 1, 2, 3, 4]
    expected = {"original": sorted(result.kept, key=lambda p: p.index), "relevance": sorted(result.kept, key=lambda p: p.rank)}
    expected["attention"] = expected["relevance"][::-1]
    expected["edges"] = [expected["relevance"][i] for i in (0, 2, 4, 3, 1)]
    assert [p.index for p in result.kept] == [p.index for p in expected[order]]


def test_ratio_threshold_and_a_generator_tokenizer(default_focuser: Focuser, question) -> None:
    words = lambda text: len(text.split())
    result = default_focuser.focus(question.question, question.paragraphs, ratio=0.4, tokenizer=words)
    assert result.tokens_in == words("\n\n".join(question.paragraphs))
    assert result.budget == math.floor(0.4 * result.tokens_in)
    assert result.tokens_out == words(result.context) <= result.budget
    positive = default_focuser.focus(question.question, question.paragraphs, threshold=0.0)
    assert positive.kept and all(p.score >= 0 for p in positive.kept) and all(p.score < 0 for p in positive.dropped)


def test_documents_and_strings_are_accepted(default_focuser: Focuser) -> None:
    docs = [Document("Paris is the capital of France.", {"source": "a"}, id="d1"), "Bananas are yellow fruit."]
    result = default_focuser.focus("What is the capital of France?", docs, top_k=1)
    assert result.kept[0].id == "d1" and result.kept[0].metadata == {"source": "a"}
    assert result.dropped[0].index == 1 and result.dropped[0].id is None


def test_empty_inputs_have_documented_results(default_focuser: Focuser) -> None:
    assert default_focuser.rank("anything", []) == []
    empty = default_focuser.focus("anything", [], budget=100)
    assert (empty.context, empty.kept, empty.dropped, empty.tokens_in, empty.tokens_out) == ("", [], [], 0, 0)
    ranked = default_focuser.rank("What is the capital of France?", ["", "Paris is the capital of France.", "   \n"])
    assert [p.index for p in ranked] == [1, 0, 2]
    assert ranked[1].score == -math.inf and all(math.isnan(v) for v in ranked[1].signals.values())
    kept = default_focuser.focus("What is the capital of France?", ["", "Paris is the capital of France.", "  "])
    assert [p.index for p in kept.kept] == [1] and kept.context == "Paris is the capital of France."


def test_budget_below_every_passage_keeps_nothing(default_focuser: Focuser, question, caplog) -> None:
    result = default_focuser.focus(question.question, question.paragraphs, budget=3)
    assert result.kept == [] and result.context == "" and result.tokens_out == 0 and len(result.dropped) == 10
    assert "below every passage" in caplog.text


def test_bad_queries_and_options_give_clear_errors(default_focuser: Focuser) -> None:
    with pytest.raises(ValueError, match="query is empty"):
        default_focuser.rank("  ", ["text"])
    with pytest.raises(TypeError, match="query must be a str"):
        default_focuser.rank(None, ["text"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"passages\[1\]"):
        default_focuser.rank("q", ["text", 3])
    with pytest.raises(ValueError, match="no room is left for a passage"):  # long passages are windowed instead
        default_focuser.rank("why " * 9000, ["short", "text"])
    with pytest.raises(ValueError, match="budget must be >= 0"):
        default_focuser.focus("q", ["text"], budget=-1)
    with pytest.raises(ValueError, match="order="):
        default_focuser.focus("q", ["text"], order="best")  # type: ignore[arg-type]


def test_shared_focuser_is_thread_safe(default_focuser: Focuser) -> None:
    """The default model from 3 threads at once (the 8 x 50 calls of tests/test_concurrency.py
    run the same code on the tiny model)."""
    questions = hotpotqa(10, 1)
    expected = [[(p.index, p.score) for p in default_focuser.rank(q.question, q.paragraphs[:4])] for q in questions]
    results: dict[tuple[int, int], list] = {}
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for position, q in enumerate(questions):
                results[(thread, position)] = [(p.index, p.score) for p in default_focuser.rank(q.question, q.paragraphs[:4])]
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(results[(t, p)] == expected[p] for t in range(3) for p in range(len(questions)))


def test_module_level_focus_creates_one_shared_default(monkeypatch) -> None:
    import ragfocus.focuser as module

    monkeypatch.setattr(module, "_default_focuser", None)
    result = focus("What is the capital of France?", ["Bananas are yellow.", "Paris is the capital of France."], top_k=1)
    assert result.kept[0].index == 1
    shared = module.default_focuser()
    assert shared is module.default_focuser() and shared.loaded.name == "smollm2-135m-instruct"


def test_scoring_options(default_model) -> None:
    question = hotpotqa(7, 1)[0]
    paragraphs = question.paragraphs[:5]
    mean = Focuser(default_model, fusion="heads").rank(question.question, paragraphs)
    total = Focuser(default_model, fusion="heads", aggregate="sum", sink_factor=None, heads={18: [6], 17: [3, 4]}).rank(
        question.question, paragraphs
    )
    by_index = {p.index: p for p in total}
    for passage in mean:
        other = by_index[passage.index]
        assert math.isclose(other.score, other.signals["query_attention"] - other.signals["null_attention"], abs_tol=1e-9)
        assert other.score != pytest.approx(passage.score)
    with pytest.raises(ValueError, match="aggregate="):
        Focuser(default_model, aggregate="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sink_factor"):
        Focuser(default_model, sink_factor=0)
    with pytest.raises(ValueError, match="layer 40"):
        Focuser(default_model, heads={40: [0]})
