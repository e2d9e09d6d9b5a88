"""Prompts packed end to end in one row (``ragfocus.engine.varlen``) and the distraction pass
that runs them (``ragfocus.scoring.distraction``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ragfocus.engine.packing import pack_prompts
from ragfocus.engine.varlen import PackedRow, keyed_row, packed_causal_attention, packed_positions, packed_row
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.models import LoadedModel
from ragfocus.scoring.distraction import (
    packed_logprobs,
    sequence_logprobs,
    launch_distraction,
    packed_chunks,
    score_distraction,
    shared_prefix,
    tokenize_distraction,
)


def test_packed_row_offsets_positions_and_prefix_index() -> None:
    row = packed_row([3, 2], torch.device("cpu"))
    assert row.tokens == 5 and row.prefix_length == 0 and row.key_index is None
    assert row.query_offsets.tolist() == [0, 3, 5] and row.key_offsets.tolist() == [0, 3, 5]
    assert row.query_offsets.dtype == torch.int32
    assert packed_positions(row).tolist() == [[0, 1, 2, 0, 1]]
    prefix = [(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))]
    row = packed_row([3, 2], torch.device("cpu"), prefix=prefix)
    assert row.prefix_length == 2
    assert row.key_offsets.tolist() == [0, 5, 9]
    # cat(prefix, row): the prefix (0, 1) before each prompt's own keys (2-4, then 5-6).
    assert row.key_index is not None and row.key_index.tolist() == [0, 1, 2, 3, 4, 0, 1, 5, 6]
    assert packed_positions(row).tolist() == [[2, 3, 4, 2, 3]]
    with pytest.raises(ValueError, match="at least one token"):
        packed_row([3, 0], torch.device("cpu"))
    with pytest.raises(ValueError, match="at least one prompt"):
        packed_row([], torch.device("cpu"))


def test_keyed_row_lets_a_suffix_read_its_prompts_prefix() -> None:
    """``pack_prompts``: prompt 0 (prefix of 3, suffixes of 2 and 1) then prompt 1 (prefix of
    2, suffixes of 1 and 2). A further suffix's keys are its prefix, then itself."""
    packed = pack_prompts([[1, 2, 3], [4, 5]], [[[6, 7], [8]], [[9], [10, 11]]], [[(0, 2), (0, 1)], [(0, 1), (1, 2)]])
    assert packed.input_ids.tolist() == [[1, 2, 3, 6, 7, 8, 4, 5, 9, 10, 11]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 3, 0, 1, 2, 2, 3]]
    assert packed.lengths == [5, 1, 3, 2]
    assert [keys.tolist() for keys in packed.key_index] == [[0, 1, 2, 3, 4], [0, 1, 2, 5], [6, 7, 8], [6, 7, 9, 10]]
    assert packed.row_index.tolist() == [[3, 4, 5] + [3] * 5, [8, 10] + [8] * 6]
    assert packed.key_window.shape == (2, 64) and packed.key_window[1, :5].tolist() == [6, 7, 8, 9, 10]
    assert packed.key_window[1, 5:].eq(10).all()  # past the row's end: its last token, masked
    bias = packed.bias()[:, 0]
    # Prompt 1's second suffix's row (local 4) sees the prefix (0, 1) and itself, not the first suffix (2).
    assert torch.isfinite(bias[1, 1, :6]).tolist() == [True, True, False, True, True, False]
    row = keyed_row(packed.lengths, packed.key_index, torch.device("cpu"))
    assert row.key_offsets.tolist() == [0, 5, 9, 12, 16] and row.key_lengths == [5, 4, 3, 4] and row.longest_keys == 5
    with pytest.raises(ValueError, match="end with its own"):
        keyed_row([2], [np.array([0])], torch.device("cpu"))
    with pytest.raises(ValueError, match="one key index per prompt"):
        keyed_row([2, 1], [np.array([0, 1])], torch.device("cpu"))


def _padded_reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, row: PackedRow, prefix: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Each prompt alone, through explicitly masked attention with its keys repeated per head."""
    outputs = []
    start = 0
    groups = query.shape[1] // key.shape[1]
    for length in row.lengths:
        q = query[:, :, start : start + length]
        k, v = key[:, :, start : start + length], value[:, :, start : start + length]
        if prefix is not None:
            k, v = torch.cat([prefix[0], k], dim=2), torch.cat([prefix[1], v], dim=2)
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        skipped = k.shape[2] - length
        allowed = torch.arange(k.shape[2])[None, :] <= torch.arange(length)[:, None] + skipped
        scores = (q @ k.transpose(-1, -2)) * 0.25 + torch.where(allowed, 0.0, float("-inf"))
        outputs.append((scores.softmax(-1) @ v).transpose(1, 2))
        start += length
    return torch.cat(outputs, dim=1)


@pytest.mark.parametrize("with_prefix", [False, True])
def test_packed_causal_attention_keeps_each_prompt_to_itself(with_prefix: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = [5, 1, 7]
    query = torch.randn(1, 6, sum(lengths), 16, generator=generator)
    key, value = (torch.randn(1, 2, sum(lengths), 16, generator=generator) for _ in range(2))
    prefix = (torch.randn(1, 2, 3, 16, generator=generator), torch.randn(1, 2, 3, 16, generator=generator)) if with_prefix else None
    row = packed_row(lengths, torch.device("cpu"), prefix=None if prefix is None else [prefix])
    output = packed_causal_attention(query, key, value, row, layer=0, scaling=0.25)
    assert output.shape == (1, sum(lengths), 6, 16)
    torch.testing.assert_close(output, _padded_reference(query, key, value, row, prefix), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="one batch row"):
        packed_causal_attention(query[:, :, :-1], key[:, :, :-1], value[:, :, :-1], row, layer=0, scaling=0.25)


def test_packed_chunks_bound_prompts_and_tokens_in_order() -> None:
    assert packed_chunks([10, 20, 30, 5], max_prompts=8, max_tokens=35) == [[0, 1], [2, 3]]
    assert packed_chunks([10, 20, 30], max_prompts=2, max_tokens=1000) == [[0, 1], [2]]
    assert packed_chunks([50, 10], max_prompts=8, max_tokens=20) == [[0], [1]]  # too long: alone
    assert packed_chunks([], max_prompts=2) == []
    with pytest.raises(ValueError, match="max_prompts"):
        packed_chunks([1], max_prompts=0)


def test_packed_distraction_equals_the_padded_pass_on_the_default_model(default_model: LoadedModel) -> None:
    """Real HotpotQA dev prompts on the default model: packed end to end (with and without the
    shared prefix) the abstain log-probabilities equal the right-padded pass's."""
    questions = hotpotqa(0, 2)
    prompts = tokenize_distraction(default_model.tokenizer, [(q.question, q.paragraphs[:3]) for q in questions])
    model = default_model.model
    prefix = shared_prefix(model, prompts.sequences, keep=prompts.answer_length + 1)
    assert prefix is not None
    with torch.inference_mode():
        padded = sequence_logprobs(model, prompts.sequences, prompts.answer_length)
        packed = packed_logprobs(model, prompts.sequences, prompts.answer_length)
        packed_after_prefix = packed_logprobs(model, prompts.sequences, prompts.answer_length, prefix=prefix)
    assert len(set(padded.tolist())) == len(prompts.sequences)  # real, distinct scores
    assert packed.tolist() == pytest.approx(padded.tolist(), abs=1e-4)
    assert packed_after_prefix.tolist() == pytest.approx(padded.tolist(), abs=1e-4)
    with pytest.raises(ValueError, match="shared prefix"):
        packed_logprobs(model, [[1, 2, 3, 4]] + prompts.sequences[1:], prompts.answer_length, prefix=prefix)


def test_launch_distraction_packed_matches_its_chunked_default(default_model: LoadedModel) -> None:
    """``packed=True`` on a CPU (the CUDA default) gives each query's scores in passage order,
    equal to the length-chunked pass, over passes cut by ``batch_size``."""
    questions = hotpotqa(2, 2)
    prompts = tokenize_distraction(default_model.tokenizer, [(q.question, q.paragraphs[:4]) for q in questions])
    chunked = score_distraction(default_model.model, prompts, batch_size=3)
    packed = launch_distraction(default_model.model, prompts, batch_size=3, packed=True).result()
    assert [len(scores.abstain_logprob) for scores in packed] == [4] * len(questions)
    for got, expected in zip(packed, chunked):
        assert got.abstain_logprob == pytest.approx(expected.abstain_logprob, abs=1e-4)


def test_packed_prompts_refuse_a_model_without_the_registered_attention() -> None:
    """Transformers' own SDPA would read the placeholder mask as "attend everywhere", across
    prompts: a model without ragfocus's attention is refused instead."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ragfocus.evaluation.bench import packed_forward

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(config).eval()
    with pytest.raises(ValueError, match="ragfocus_capture"):
        packed_logprobs(model, [[1, 2, 3, 4], [1, 2, 5, 6]], 1)
    with pytest.raises(ValueError, match="load_model"):
        packed_forward(model, [[1, 2, 3]])


def test_can_pack_only_plain_causal_models_on_the_registered_attention(default_model: LoadedModel) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    from ragfocus.engine.capture import CAPTURE_IMPLEMENTATION, register_capture_attention
    from ragfocus.scoring.distraction import can_pack

    assert can_pack(default_model.model)
    register_capture_attention()
    plain = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    assert not can_pack(plain)  # transformers' SDPA
    plain.set_attn_implementation(CAPTURE_IMPLEMENTATION)
    assert can_pack(plain)
    windowed = MistralForCausalLM(MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                num_attention_heads=4, num_key_value_heads=2, sliding_window=16)).eval()
    windowed.set_attn_implementation(CAPTURE_IMPLEMENTATION)
    assert not can_pack(windowed)
    # A model that cannot pack runs the padded chunks even when asked to pack.
    prompts = tokenize_distraction(default_model.tokenizer, [("Who?", ["A passage.", "Another passage here."])])
    scores = launch_distraction(windowed, type(prompts)([[token % 64 for token in s] for s in prompts.sequences],
                                                         prompts.answer_length, prompts.passages), packed=True).result()
    assert len(scores) == 1 and len(scores[0].abstain_logprob) == 2
