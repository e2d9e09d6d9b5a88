"""The attention engine holds its numbers against eager attention with output_attentions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from ragfocus import LoadedModel
from ragfocus.engine import AttentionEngine
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.prompt import build_prompt


def _eager_rows(directory: Path, prefix: list[int], suffix: list[int], rows: tuple[int, int], heads: dict[int, list[int]]) -> torch.Tensor:
    reference = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        attentions = reference(torch.tensor([prefix + suffix]), output_attentions=True).attentions
    start, end = len(prefix) + rows[0], len(prefix) + rows[1]
    return torch.cat([attentions[layer][0, hs, start:end, : len(prefix)] for layer, hs in sorted(heads.items())])


def _model_directory(model: LoadedModel) -> Path:
    return Path(model.model.config._name_or_path)


def test_capture_matches_eager_attention_on_the_default_model(default_model: LoadedModel) -> None:
    question = hotpotqa(0, 1)[0]
    prompt = build_prompt(default_model.tokenizer, question.question, question.paragraphs[:5])
    heads = {3: [0, 8], 14: [3], 18: [6, 7], 23: list(range(9))}  # 14 heads
    engine = AttentionEngine(default_model.model)
    query_rows, null_rows = engine.suffix_attention(
        prompt.prefix_ids, [prompt.query_ids, prompt.null_ids], rows=[prompt.query_rows, prompt.null_rows], heads=heads
    )
    directory = _model_directory(default_model)
    expected_query = _eager_rows(directory, prompt.prefix_ids, prompt.query_ids, prompt.query_rows, heads)
    expected_null = _eager_rows(directory, prompt.prefix_ids, prompt.null_ids, prompt.null_rows, heads)
    assert query_rows.shape == expected_query.shape == (14, prompt.query_rows[1] - prompt.query_rows[0], len(prompt.prefix_ids))
    assert torch.allclose(query_rows, expected_query, atol=1e-4, rtol=0)
    assert torch.allclose(null_rows, expected_null, atol=1e-4, rtol=0)
    # The rows are real distributions that put mass on the passages, not zeros.
    assert query_rows.sum(-1).max() <= 1.0 + 1e-4 and query_rows.sum(-1).min() > 0.05


def test_capture_handles_grouped_query_attention(tiny_model: LoadedModel) -> None:
    tokenizer = tiny_model.tokenizer
    prefix = tokenizer("Here are some paragraphs:\n\n[1] Paris is in France.\n\n[2] Bananas are yellow.\n\n")["input_ids"]
    suffix = tokenizer("Query: where is Paris?", add_special_tokens=False)["input_ids"]
    short = tokenizer("Query: N/A", add_special_tokens=False)["input_ids"]
    heads = {0: [0, 3, 4, 7], 2: [1, 6]}  # heads 0/3 share KV head 0, 4/7 share KV head 1
    rows = [(2, len(suffix)), (2, len(short))]
    captured = AttentionEngine(tiny_model.model).suffix_attention(prefix, [suffix, short], rows=rows, heads=heads)
    directory = _model_directory(tiny_model)
    assert torch.allclose(captured[0], _eager_rows(directory, prefix, suffix, rows[0], heads), atol=1e-5, rtol=0)
    # The shorter suffix was right-padded in the batch: its rows must not see the padding.
    assert torch.allclose(captured[1], _eager_rows(directory, prefix, short, rows[1], heads), atol=1e-5, rtol=0)


def test_forward_stops_after_the_last_layer_needed(default_model: LoadedModel) -> None:
    reached: list[int] = []
    layers = default_model.model.model.layers
    handles = [layer.register_forward_pre_hook(lambda module, args, index=i: reached.append(index)) for i, layer in enumerate(layers)]
    try:
        tokenizer = default_model.tokenizer
        prefix = tokenizer("[1] Some passage text.\n\n")["input_ids"]
        suffix = tokenizer("Query: anything", add_special_tokens=False)["input_ids"]
        AttentionEngine(default_model.model).suffix_attention(prefix, [suffix], rows=[(0, len(suffix))], heads={5: [1]})
    finally:
        for handle in handles:
            handle.remove()
    assert max(reached) == 5  # layers 6-29 never ran, in the prefill or the suffix pass


def test_model_without_capture_attention_is_refused(tiny_model_dir: Path) -> None:
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    with pytest.raises(ValueError, match="attn_implementation"):
        AttentionEngine(plain)


@pytest.mark.parametrize(
    ("heads", "message"),
    [({}, "empty"), ({30: [0]}, "layer 30"), ({2: [9]}, "out of range"), ({2: []}, "out of range"), ({-1: [0]}, "layer -1")],
)
def test_invalid_heads_are_named(default_model: LoadedModel, heads: dict[int, list[int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AttentionEngine(default_model.model).validate_heads(heads)


def test_model_stays_usable_for_plain_generation(default_model: LoadedModel) -> None:
    """Outside a capture the registered attention is plain SDPA: logits match an SDPA model."""
    ids = default_model.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    reference = AutoModelForCausalLM.from_pretrained(_model_directory(default_model), attn_implementation="sdpa")
    with torch.no_grad():
        ours = default_model.model(ids).logits
        theirs = reference(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_grouped_query_attention_equals_repeated_key_value_heads() -> None:
    """Query heads stacked per key/value head give SDPA's result with the heads repeated."""
    from transformers.integrations.sdpa_attention import repeat_kv

    from ragfocus.engine.capture import grouped_query_attention

    generator = torch.Generator().manual_seed(0)
    batch, kv_heads, groups, q_len, k_len, dim = 2, 3, 3, 5, 11, 8
    query = torch.randn(batch, kv_heads * groups, q_len, dim, generator=generator)
    key = torch.randn(batch, kv_heads, k_len, dim, generator=generator)
    value = torch.randn(batch, kv_heads, k_len, dim, generator=generator)
    mask = torch.rand(batch, 1, q_len, k_len, generator=generator) > 0.4
    mask[..., 0] = True  # no empty row
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, repeat_kv(key, groups), repeat_kv(value, groups), attn_mask=mask, scale=0.3
    ).transpose(1, 2)
    found = grouped_query_attention(query, key, value, mask, scaling=0.3)
    assert found is not None and found.shape == (batch, q_len, kv_heads * groups, dim)
    assert torch.allclose(found, expected, atol=1e-6)
    assert grouped_query_attention(query, key, value, mask.expand(-1, 9, -1, -1), scaling=0.3) is None


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("heads", [[0, 1, 2, 3, 4, 5], [1, 4, 5]])
def test_packed_row_attention_equals_rows_computed_one_by_one(heads: list[int], softcap: float | None) -> None:
    from ragfocus.engine.capture import packed_row_attention

    generator = torch.Generator().manual_seed(3)
    batch, kv_heads, groups, q_len, k_len, dim, rows, suffixes = 2, 2, 3, 7, 9, 4, 4, 2
    query = torch.randn(batch, kv_heads * groups, q_len, dim, generator=generator)
    key = torch.randn(batch, kv_heads, k_len, dim, generator=generator)
    row_index = torch.randint(0, q_len, (batch, rows), generator=generator)
    bias = torch.where(torch.rand(batch, 1, rows, k_len, generator=generator) > 0.3, 0.0, float("-inf"))
    bias[..., 0] = 0.0
    weights = torch.rand(batch, suffixes, rows, generator=generator)
    found = packed_row_attention(query, key, row_index=row_index, row_bias=bias, row_weights=weights,
                                 heads=torch.tensor(heads), scaling=0.4, softcap=softcap)
    assert found.shape == (batch, suffixes, len(heads), k_len) and found.dtype == torch.float32
    for b in range(batch):
        for position, head in enumerate(heads):
            scores = query[b, head, row_index[b]] @ key[b, head // groups].T * 0.4
            if softcap is not None:
                scores = torch.tanh(scores / softcap) * softcap
            expected = weights[b] @ torch.softmax(scores + bias[b, 0], dim=-1)
            assert torch.allclose(found[b, :, position], expected, atol=1e-6)


def test_row_scores_fall_back_to_float32_where_the_half_product_is_missing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On CUDA half-precision rows are scored by a product with float32 output; where that
    product does not exist (this CPU build), the first call finds out, logs it, and converts."""
    from ragfocus.engine import row_attention as capture

    monkeypatch.setattr(capture, "_HALF_PRODUCTS", {"cpu": True})
    generator = torch.Generator().manual_seed(4)
    query = torch.randn(2, 3, 5, 8, generator=generator).half()
    key = torch.randn(2, 3, 6, 8, generator=generator).half()
    with caplog.at_level("INFO", logger="ragfocus.engine.row_attention"):
        scores = capture._row_scores(query, key)
    assert scores.dtype == torch.float32
    assert torch.equal(scores, query.float() @ key.float().transpose(-1, -2))
    assert capture._HALF_PRODUCTS == {"cpu": False}
    assert "converting to float32" in caplog.text


def test_append_in_place_cache_returns_what_the_dynamic_cache_returns() -> None:
    from transformers import LlamaConfig, MistralConfig
    from transformers.cache_utils import DynamicCache

    from ragfocus.engine.append_cache import AppendInPlaceLayer, append_in_place_cache

    config = LlamaConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    cache, plain = append_in_place_cache(config, capacity=9), DynamicCache(config=config)
    assert all(type(layer) is AppendInPlaceLayer for layer in cache.layers)
    generator = torch.Generator().manual_seed(5)
    for length in (5, 4, 3):  # the third update passes the capacity: concatenated instead
        keys, values = torch.randn(2, 2, length, 4, generator=generator), torch.randn(2, 2, length, 4, generator=generator)
        found = cache.update(keys, values, layer_idx=1)
        expected = plain.update(keys, values, layer_idx=1)
        assert torch.equal(found[0], expected[0]) and torch.equal(found[1], expected[1])
        assert cache.get_seq_length(1) == plain.get_seq_length(1)
    assert cache.layers[0].keys is None  # untouched layers stay empty

    sliding = MistralConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, sliding_window=4)
    assert all(type(layer) is not AppendInPlaceLayer for layer in append_in_place_cache(sliding, capacity=9).layers)
