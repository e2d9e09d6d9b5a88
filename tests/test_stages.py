"""Attention sorting, distraction, learned heads, fusion, positional calibration and
sentence pruning on the real default model (SmolLM2-135M-Instruct), dev questions only."""

from __future__ import annotations

import math

import pytest
import torch

from ragfocus import Focuser, Passage
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.fusion import fuse, slot_order
from ragfocus.prompt import build_prompt
from ragfocus.scoring.attention_sort import attention_sort, check_sort_rounds, passage_attention
from ragfocus.scoring.distraction import distraction_prompt_ids, distraction_scores
from ragfocus.scoring.retrieval_heads import capture_head_attention
from ragfocus.sentences import split_sentences

QUESTION = hotpotqa(2601, 1)[0]


@pytest.fixture(scope="module")
def with_distraction(default_model) -> Focuser:
    return Focuser(default_model, distraction=True)


@pytest.mark.parametrize("distraction", [False, True])
def test_focuser_computes_every_signal_and_fuses_them(default_focuser: Focuser, with_distraction: Focuser, distraction: bool) -> None:
    """The default reads every signal but distraction (one forward pass); ``distraction=True``
    adds distraction and the abstain log-probability, and the fusion weighs them in."""
    focuser = with_distraction if distraction else default_focuser
    ranked = focuser.rank(QUESTION.question, QUESTION.paragraphs)
    assert {"learned_heads", "attention_sort", "bm25"} <= set(focuser.signal_names)
    assert ({"distraction", "abstain_logprob"} <= set(focuser.signal_names)) is distraction
    assert not default_focuser.distraction
    for passage in ranked:
        assert set(focuser.signal_names) <= set(passage.signals)
        assert all(math.isfinite(value) for value in passage.signals.values())
    by_index = sorted(ranked, key=lambda p: p.index)
    expected = fuse([p.signals for p in by_index], focuser.fusion, positional=focuser.positional)
    assert [p.score for p in by_index] == pytest.approx(expected)
    assert [p.index for p in ranked] == sorted(range(len(ranked)), key=lambda i: (-expected[i], i))
    if distraction:
        without = fuse([{k: v for k, v in p.signals.items() if k not in ("distraction", "abstain_logprob")} for p in by_index],
                       focuser.fusion, positional=focuser.positional)
        assert without != pytest.approx(expected)  # the distraction weight moves the scores


def test_attention_sort_rounds_reuse_the_ranking_pass_and_end_most_attended_last(default_focuser: Focuser) -> None:
    tokenizer, texts = default_focuser.loaded.tokenizer, QUESTION.paragraphs
    heads = default_focuser.fusion.sort_head_set
    prompt = build_prompt(tokenizer, QUESTION.question, texts)
    captured = capture_head_attention(default_focuser.engine, prompt, heads, sort=True)
    shared = passage_attention(captured.sort, prompt.passage_spans)

    def prompt_for(order: list[int]):
        return build_prompt(tokenizer, QUESTION.question, [texts[i] for i in order])

    fresh = attention_sort(default_focuser.engine, prompt_for, len(texts), heads, rounds=1)
    # Round one read from the ranking pass's cache equals a fresh decoding step.
    assert fresh.rounds[0] == pytest.approx(shared, rel=1e-3, abs=1e-6)
    result = attention_sort(default_focuser.engine, prompt_for, len(texts), heads, rounds=3, first_round=shared)
    assert len(result.rounds) == 3 and sorted(result.order) == list(range(len(texts)))
    assert result.rounds[1] != pytest.approx(result.rounds[0])  # round two saw a different order
    last = result.scores
    assert [last[i] for i in result.order] == sorted(last)  # most attended last


@pytest.mark.parametrize("rounds", [-1, 9])
def test_sort_rounds_out_of_range_are_refused(rounds: int) -> None:
    with pytest.raises(ValueError, match="sort_rounds"):
        check_sort_rounds(rounds)


def test_focuser_with_more_sort_rounds_changes_the_sort_signal(default_model) -> None:
    one = Focuser(default_model, sort_rounds=1, distraction=False).rank(QUESTION.question, QUESTION.paragraphs)
    two = Focuser(default_model, sort_rounds=2, distraction=False).rank(QUESTION.question, QUESTION.paragraphs)
    first = {p.index: p.signals["attention_sort"] for p in one}
    second = {p.index: p.signals["attention_sort"] for p in two}
    assert first != pytest.approx(second)
    with pytest.raises(ValueError, match="sort_rounds must be at least 1"):
        Focuser(default_model, sort_rounds=0)


def test_distraction_is_one_minus_the_abstain_probability_and_batching_changes_nothing(default_model) -> None:
    texts = QUESTION.paragraphs[:5]
    batched = distraction_scores(default_model.model, default_model.tokenizer, QUESTION.question, texts, batch_size=16)
    alone = distraction_scores(default_model.model, default_model.tokenizer, QUESTION.question, texts, batch_size=1)
    assert batched.abstain_logprob == pytest.approx(alone.abstain_logprob, abs=2e-3)
    for de, logprob in zip(batched.distraction, batched.abstain_logprob):
        assert logprob < 0 and de == pytest.approx(1 - math.exp(logprob))
    # Against the plain LM: the full logits of prompt + answer, the answer's log-probabilities summed.
    prompt, answer = distraction_prompt_ids(default_model.tokenizer, QUESTION.question, texts[2])
    with torch.inference_mode():
        logits = default_model.model(input_ids=torch.tensor([prompt + answer])).logits[0].float()
    steps = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    plain = float(steps.gather(1, torch.tensor(answer)[:, None]).sum())
    assert batched.abstain_logprob[2] == pytest.approx(plain, abs=2e-3)
    # An empty passage leaves nothing to answer from: the model abstains more than with any real one.
    empty = distraction_scores(default_model.model, default_model.tokenizer, QUESTION.question, ["N/A"])
    assert empty.abstain_logprob[0] > min(batched.abstain_logprob)


def test_retriever_scores_enter_the_fusion(default_focuser: Focuser) -> None:
    passages = [Passage(text, id=str(i), score=float(i == 7)) for i, text in enumerate(QUESTION.paragraphs)]
    ranked = default_focuser.rank(QUESTION.question, passages)
    assert all(p.signals["retriever"] == float(p.index == 7) for p in ranked)
    plain = {p.index: p.score for p in default_focuser.rank(QUESTION.question, QUESTION.paragraphs)}
    assert {p.index: p.score for p in ranked}[7] > plain[7]


def test_positional_calibration_changes_the_scores_when_the_profile_has_a_bias(default_model) -> None:
    on = Focuser(default_model, positional=True, distraction=False).rank(QUESTION.question, QUESTION.paragraphs)
    off = Focuser(default_model, positional=False, distraction=False).rank(QUESTION.question, QUESTION.paragraphs)
    assert {p.index: p.score for p in on} != pytest.approx({p.index: p.score for p in off})


def test_calibrated_order_puts_the_best_passages_in_the_most_attended_slots(default_focuser: Focuser) -> None:
    result = default_focuser.focus(QUESTION.question, QUESTION.paragraphs, top_k=5, order="calibrated")
    relevance = default_focuser.focus(QUESTION.question, QUESTION.paragraphs, top_k=5)
    assert sorted(p.index for p in result.kept) == sorted(p.index for p in relevance.kept)
    slots = slot_order(default_focuser.fusion.slot_strength, 5)
    best_first = [p.index for p in relevance.kept]
    assert [p.index for p in result.kept][slots[0]] == best_first[0]
    assert [p.index for p in result.kept][slots[1]] == best_first[1]


def test_sentence_granularity_prunes_inside_passages_under_the_budget(default_focuser: Focuser) -> None:
    count = default_focuser.token_count
    passage_level = default_focuser.focus(QUESTION.question, QUESTION.paragraphs, ratio=0.25)
    sentence_level = default_focuser.focus(QUESTION.question, QUESTION.paragraphs, ratio=0.25, granularity="sentence")
    assert sentence_level.tokens_out <= sentence_level.budget
    assert count(sentence_level.context) == sentence_level.tokens_out
    assert sentence_level.tokens_out >= passage_level.tokens_out  # sentences fill what whole passages leave
    pruned = [p for p in sentence_level.kept if p.text != p.passage.text]
    assert pruned, "a quarter of the tokens should force pruning inside some passage"
    for passage in pruned:
        sentences = [s.text for s in split_sentences(passage.passage.text)]
        assert " ".join(s for s in sentences if s in passage.text) == passage.text
    assert len(sentence_level.kept) + len(sentence_level.dropped) == len(QUESTION.paragraphs)
    with pytest.raises(ValueError, match="granularity"):
        default_focuser.focus(QUESTION.question, QUESTION.paragraphs, ratio=0.25, granularity="words")  # type: ignore[arg-type]


def test_sentence_splitter_keeps_abbreviations_together() -> None:
    sentences = split_sentences("Dr. T.S. Arthur wrote it in 1854. It sold 3.5 million copies.  ")
    assert [s.text for s in sentences] == ["Dr. T.S. Arthur wrote it in 1854.", "It sold 3.5 million copies."]
    assert split_sentences("   ") == []
