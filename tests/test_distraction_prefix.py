"""The distraction prompts' shared first tokens, run once (``ragfocus.scoring.distraction``)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ragfocus import Focuser
from ragfocus.evaluation.bench import render_bench, run_bench
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.models import LoadedModel, load_model
from ragfocus.scoring.distraction import (
    MIN_SHARED_PREFIX,
    sequence_logprobs,
    common_prefix_length,
    distraction_scores,
    length_chunks,
    shared_prefix,
    tokenize_distraction,
)


def test_common_prefix_length() -> None:
    assert common_prefix_length([]) == 0
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[1, 2, 3]]) == 3
    assert common_prefix_length([[5, 2], [1, 2]]) == 0


def test_shared_prefix_is_the_template_and_instruction_and_changes_no_score(default_model: LoadedModel) -> None:
    """Real HotpotQA dev prompts on the default model: the shared part ends where the passage
    starts, and the log-probabilities after the cached prefix equal those of the whole prompts."""
    questions = hotpotqa(0, 2)
    prompts = tokenize_distraction(default_model.tokenizer, [(q.question, q.paragraphs[:3]) for q in questions])
    model = default_model.model
    prefix = shared_prefix(model, prompts.sequences, keep=prompts.answer_length + 1)
    assert prefix is not None and len(prefix.ids) >= MIN_SHARED_PREFIX
    assert default_model.tokenizer.decode(prefix.ids).endswith("Passage:")
    assert all(sequence[: len(prefix.ids)] == prefix.ids for sequence in prompts.sequences)
    with torch.inference_mode():
        whole = sequence_logprobs(model, prompts.sequences, prompts.answer_length, pad_multiple=64)
        shared = sequence_logprobs(model, prompts.sequences, prompts.answer_length, pad_multiple=64, prefix=prefix)
    assert shared.tolist() == pytest.approx(whole.tolist(), abs=1e-4)
    assert len(set(whole.tolist())) == len(prompts.sequences)  # real, distinct scores, not a constant
    with pytest.raises(ValueError, match="shared prefix"):
        sequence_logprobs(model, [[1, 2, 3, 4]] + prompts.sequences[1:], prompts.answer_length, prefix=prefix)


def test_no_shared_prefix_when_it_would_not_pay_or_not_be_exact(default_model: LoadedModel, tmp_path) -> None:
    model = default_model.model
    assert shared_prefix(model, [list(range(100))], keep=5) is None  # one prompt: nothing to share
    assert shared_prefix(model, [[1] * 6 + [2] * 50, [1] * 6 + [3] * 50], keep=5) is None  # too short
    assert shared_prefix(model, [[1] * 20 + [2] * 3, [1] * 20 + [3] * 50], keep=5) is not None
    # Every sequence keeps ``keep`` tokens after the prefix, even one that is all common tokens.
    capped = shared_prefix(model, [[1] * 40, [1] * 40 + [2] * 9], keep=5)
    assert capped is not None and len(capped.ids) == 35

    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=16)
    windowed = MistralForCausalLM(config).eval()
    assert shared_prefix(windowed, [[1] * 20 + [2] * 3, [1] * 20 + [3] * 5], keep=5) is None  # the window would crop it


def test_bench_times_a_bare_forward_over_every_prompt_with_distraction(tiny_model_dir) -> None:
    focuser = Focuser(load_model(tiny_model_dir, device="cpu"), distraction=True)
    questions = hotpotqa(0, 3)
    report = run_bench(focuser, questions, batch_size=2, repeat=2)
    names = [phase.name for phase in report.phases]
    assert names[:3] == ["bare_forward", "bare_forward_all_prompts", "rank_many"]
    ranking, every = report.phase("bare_forward"), report.phase("bare_forward_all_prompts")
    assert ranking is not None and every is not None
    expected = sum(len(ids) for ids in tokenize_distraction(focuser.loaded.tokenizer, [(q.question, q.paragraphs) for q in questions]).sequences)
    assert every.tokens == ranking.tokens + expected
    assert report.extra["distraction_prompts"] == sum(len(q.paragraphs) for q in questions)
    assert len(report.extra["runs"]["bare_forward_all_prompts"]) == 2
    assert report.rank_over_all_prompts_forward is not None and report.rank_over_all_prompts_forward > 0
    assert json.loads(json.dumps(report.to_dict()))["rank_over_all_prompts_forward"] == report.rank_over_all_prompts_forward
    assert "every prompt it reads" in render_bench(report)


def test_length_chunks_cut_at_a_longer_prompt_and_bound_prompts_and_tokens() -> None:
    lengths = [100, 10, 12, 11, 130, 30, 500, 13, 120, 2000]
    chunks = length_chunks(lengths, max_prompts=3, multiple=1, ratio=1.3, max_tokens=1000)
    assert sorted(index for chunk in chunks for index in chunk) == list(range(len(lengths)))  # each prompt once
    assert chunks == [[1, 3, 2], [7], [5], [0, 8, 4], [6], [9]]
    for chunk in chunks:
        widths = [lengths[index] for index in chunk]
        assert widths == sorted(widths) and len(chunk) <= 3
        assert max(widths) <= 1.3 * min(widths) and (len(chunk) == 1 or max(widths) * len(chunk) <= 1000)
    # Widths are compared after rounding: with a multiple of 64 the short prompts all share one chunk.
    assert length_chunks([10, 12, 40, 64], max_prompts=8, multiple=64) == [[0, 1, 2, 3]]
    assert length_chunks([], max_prompts=4) == []
    # With no ratio and no token limit (what CUDA uses): the sorted prompts, max_prompts at a time.
    assert length_chunks(lengths, max_prompts=4, multiple=64, ratio=math.inf, max_tokens=math.inf) == [[1, 3, 2, 7], [5, 0, 8, 4], [6, 9]]
    with pytest.raises(ValueError, match="max_prompts"):
        length_chunks([1], max_prompts=0)


def test_one_query_scores_equal_with_any_chunking(default_model: LoadedModel) -> None:
    """Length-sorted chunks (a development question, passages of very different lengths) give each passage the score it gets alone, in the passages' own order."""
    question = hotpotqa(1, 1)[0]
    passages = [question.paragraphs[0], question.paragraphs[1] * 4, "N/A", question.paragraphs[2] * 2]
    together = distraction_scores(default_model.model, default_model.tokenizer, question.question, passages)
    for index, passage in enumerate(passages):
        alone = distraction_scores(default_model.model, default_model.tokenizer, question.question, [passage])
        assert together.abstain_logprob[index] == pytest.approx(alone.abstain_logprob[0], abs=2e-3)


def test_lower_right_causal_attention_equals_masked_attention_with_grouped_heads() -> None:
    """Each of the n new queries sees every earlier key and the new keys up to itself; two
    query heads share each key/value head."""
    from ragfocus.engine.capture import lower_right_causal_attention

    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 4, 5, 8, generator=generator)
    key, value = torch.randn(2, 2, 9, 8, generator=generator), torch.randn(2, 2, 9, 8, generator=generator)
    found = lower_right_causal_attention(query, key, value, scaling=0.3)
    keys, values = key.repeat_interleave(2, dim=1), value.repeat_interleave(2, dim=1)
    scores = query @ keys.transpose(-1, -2) * 0.3
    visible = torch.arange(9)[None, :] <= torch.arange(5)[:, None] + 4
    expected = (scores.masked_fill(~visible, float("-inf")).softmax(-1) @ values).transpose(1, 2)
    assert found.shape == (2, 5, 4, 8)
    assert torch.allclose(found, expected, atol=1e-5)
    with pytest.raises(ValueError, match="at least as many keys"):
        lower_right_causal_attention(query, key[:, :, :3], value[:, :, :3], scaling=None)
