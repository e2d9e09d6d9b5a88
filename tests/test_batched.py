"""Batched scoring (``Focuser.rank_many``/``focus_many``), the bf16 path and ``ragfocus bench``.

The GPU path is batched and bf16; here, on CPU, it is checked against the one-at-a-time
float32 path on the real default model: the batched float32 run must give the same rankings
and scores up to rounding, and the bf16 run the same top 2 with scores within bf16 tolerance.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
import transformers

from ragfocus import Focuser
from ragfocus.evaluation.bench import BenchReport, forward_flops, render_bench, run_bench
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.evaluation.rankings import compare_rankings, record_rankings
from ragfocus.models import LoadedModel, load_model
from ragfocus.prompt import build_prompt
from ragfocus.scoring.distraction import (
    distraction_prompt_ids,
    distraction_prompt_ids_many,
    distraction_scores,
    distraction_scores_many,
)
from ragfocus.types import Passage


@pytest.fixture(scope="module")
def dev_questions():
    return hotpotqa(40, 6)


def _by_index(ranked):
    return {p.index: p for p in ranked}


def test_batched_capture_equals_one_prompt_capture(default_focuser: Focuser, dev_questions) -> None:
    engine = default_focuser.engine
    heads = {12: [0, 3], 20: [1, 8]}
    prompts = [build_prompt(default_focuser.loaded.tokenizer, q.question, q.paragraphs[:4]) for q in dev_questions[:3]]
    assert len({len(p.prefix_ids) for p in prompts}) == 3  # different lengths: the padding is exercised
    many = engine.mean_suffix_attention_many(
        [p.prefix_ids for p in prompts],
        [[p.query_ids, p.null_ids] for p in prompts],
        rows=[[p.query_rows, p.null_rows] for p in prompts],
        heads=heads,
    )
    for prompt, batched in zip(prompts, many):
        alone = engine.suffix_attention(prompt.prefix_ids, [prompt.query_ids, prompt.null_ids],
                                        rows=[prompt.query_rows, prompt.null_rows], heads=heads)
        for single, together in zip(alone, batched):
            assert together.shape == (4, len(prompt.prefix_ids))
            torch.testing.assert_close(together, single.mean(dim=1), atol=2e-5, rtol=1e-4)


def test_one_packed_row_equals_the_two_pass_capture_on_the_default_model(default_focuser: Focuser, dev_questions) -> None:
    """The capture CUDA runs by default (every prompt and its query, calibration and sorting
    suffixes packed end to end in one row, no cache) reads the same attention as the two
    passes over a padded cache, for the heads the default Focuser reads, on HotpotQA dev
    prompts of different lengths."""
    engine = default_focuser.engine
    prompts = [build_prompt(default_focuser.loaded.tokenizer, q.question, q.paragraphs[:5]) for q in dev_questions[:4]]
    assert len({len(p.prefix_ids) for p in prompts}) == 4
    arguments = {
        "prefixes": [p.prefix_ids for p in prompts],
        "suffixes": [[p.query_ids, p.null_ids, p.sort_ids] for p in prompts],
        "rows": [[p.query_rows, p.null_rows, p.sort_rows] for p in prompts],
        "heads": default_focuser.heads_read,
    }
    padded = engine.suffix_attention_batch(**arguments, packed=False)
    packed = engine.suffix_attention_batch(**arguments, packed=True)
    assert packed.shape == padded.shape and padded.abs().sum() > 0
    torch.testing.assert_close(packed, padded, atol=2e-5, rtol=1e-4)
    # The suffixes read different rows: the comparison is not of one row with itself.
    assert not torch.allclose(packed[:, 0], packed[:, 1], atol=1e-3)


@pytest.mark.parametrize("packed", [False, True], ids=["two-passes", "one-packed-row"])
def test_packed_suffixes_capture_equals_separate_suffixes(tiny_model: LoadedModel, packed: bool) -> None:
    """Three suffixes of different lengths packed into one sequence per prompt (block mask,
    positions restarting after the prefix) read what each suffix reads alone over the prefix;
    so do the prompts and all their suffixes packed end to end in one row (``packed=True``,
    one SDPA call per segment on the CPU)."""
    from ragfocus.engine import AttentionEngine

    engine = AttentionEngine(tiny_model.model)
    generator = torch.Generator().manual_seed(0)
    prefixes = [torch.randint(10, 1000, (n,), generator=generator).tolist() for n in (37, 70, 5)]
    suffixes = [[torch.randint(10, 1000, (n,), generator=generator).tolist() for n in lengths] for lengths in ((9, 3, 12), (4, 4, 1), (20, 2, 6))]
    rows = [[(2, 7), (0, 3), (11, 12)], [(0, 4), (1, 2), (0, 1)], [(5, 19), (0, 2), (3, 6)]]
    heads = {0: [0, 5], 2: [1, 2, 7], 3: [4]}
    together = engine.suffix_attention_batch(prefixes, suffixes, rows=rows, heads=heads, packed=packed)
    assert together.shape == (3, 3, 6, 128)
    for element, prefix in enumerate(prefixes):
        alone = engine.suffix_attention(prefix, suffixes[element], rows=rows[element], heads=heads)
        for which, single in enumerate(alone):
            torch.testing.assert_close(together[element, which, :, : len(prefix)], single.mean(dim=1), atol=1e-6, rtol=1e-5)
            assert not together[element, which, :, len(prefix) :].any()  # nothing on the padding


@pytest.mark.parametrize("packed", [False, True], ids=["two-passes", "one-packed-row"])
def test_a_single_suffix_is_read_in_the_prefix_pass_alone(tiny_model: LoadedModel, packed: bool) -> None:
    """With one suffix there is no packed pass: the suffix continues its prefix and its rows
    are read there, onto the prefix only, as when it runs alone over the prefix's cache."""
    from ragfocus.engine import AttentionEngine

    engine = AttentionEngine(tiny_model.model)
    generator = torch.Generator().manual_seed(1)
    prefixes = [torch.randint(10, 1000, (n,), generator=generator).tolist() for n in (61, 3, 64)]
    suffixes = [[torch.randint(10, 1000, (n,), generator=generator).tolist()] for n in (5, 30, 1)]
    rows = [[(1, 5)], [(0, 30)], [(0, 1)]]
    heads = {1: [0, 7], 3: [2]}
    together = engine.suffix_attention_batch(prefixes, suffixes, rows=rows, heads=heads, packed=packed)
    assert together.shape == (3, 1, 3, 64)  # the longest prefix rounded up to 64, not prefix + suffix
    for element, prefix in enumerate(prefixes):
        (alone,) = engine.suffix_attention(prefix, suffixes[element], rows=rows[element], heads=heads)
        torch.testing.assert_close(together[element, 0, :, : len(prefix)], alone.mean(dim=1), atol=1e-6, rtol=1e-5)
        assert not together[element, 0, :, len(prefix) :].any()  # not its own tokens, not the padding


def test_batched_capture_rejects_mismatched_suffixes(default_focuser: Focuser) -> None:
    engine = default_focuser.engine
    with pytest.raises(ValueError, match="same number"):
        engine.mean_suffix_attention_many([[1, 2, 3], [4, 5]], [[[6, 7]], [[6, 7], [8, 9]]], rows=[[(0, 1)], [(0, 1), (0, 1)]], heads={0: [0]})
    with pytest.raises(ValueError, match="outside a suffix"):
        engine.mean_suffix_attention_many([[1, 2, 3]], [[[6, 7]]], rows=[[(0, 3)]], heads={0: [0]})


def test_rank_many_equals_rank_on_the_default_model(default_focuser: Focuser, dev_questions) -> None:
    requests = [(q.question, q.paragraphs[:7]) for q in dev_questions[:3]]
    batched = default_focuser.rank_many(requests, batch_size=2)  # two batches: the pipeline overlaps them
    for (query, passages), together in zip(requests, batched):
        alone = default_focuser.rank(query, passages)
        assert [p.index for p in together] == [p.index for p in alone]
        mine, theirs = _by_index(alone), _by_index(together)
        for index, passage in mine.items():
            assert theirs[index].score == pytest.approx(passage.score, abs=1e-4)
            assert set(theirs[index].signals) == set(passage.signals)
            for name, value in passage.signals.items():
                assert theirs[index].signals[name] == pytest.approx(value, rel=1e-3, abs=1e-4), name


def test_bf16_batched_ranks_as_float32_one_at_a_time(default_model: LoadedModel, dev_questions) -> None:
    """The GPU configuration (bf16 weights, batched), run on CPU, against the CPU default.

    bf16 is emulated on this CPU (about 5x slower than float32, 15x with distraction), so the
    check is kept small: 4 questions, their first 6 paragraphs, without distraction (the
    ranking pass, where the attention is read). The distraction signal's bf16 agreement is
    measured on the GPU (docs/gpu.md)."""
    questions = [replace(question, paragraphs=question.paragraphs[:6]) for question in dev_questions[:4]]
    reference = record_rankings(Focuser(default_model, distraction=False), questions, progress=False)
    bf16 = Focuser(load_model(device="cpu", dtype=torch.bfloat16), distraction=False)
    assert bf16.loaded.dtype == torch.bfloat16
    candidate = record_rankings(bf16, questions, batch_size=2, progress=False)
    agreement = compare_rankings(reference, candidate)
    assert agreement.questions == len(questions)
    assert agreement.same_top2 >= 3 / 4, agreement
    # bf16 keeps 8 bits of mantissa: fused scores (z-score sums of order 1) move by a few 1e-2.
    assert agreement.mean_score_difference < 0.05 * agreement.score_scale, agreement
    assert agreement.max_score_difference < 0.5, agreement


def test_rank_many_windows_mixed_inputs_and_bad_rows(tiny_model: LoadedModel) -> None:
    focuser = Focuser(tiny_model, window_tokens=160, final_round=0)
    long_text = " ".join(f"Sentence {i} tells about river number {i}." for i in range(60))
    requests = [
        ("Which river?", ["The Nile is long.", "Paris is a city.", long_text]),  # past one window
        ("", ["text"]),                                                              # empty query
        ("Where is Paris?", ["Paris is in France.", "", "Berlin is in Germany."]),  # an empty passage
        ("Who?", "not a list"),                                                      # bad passages
        ("Which city?", [Passage("Rome is a city.", id="r", metadata={"k": [1]}, score=0.5), "Oslo."]),
    ]
    snapshot = json.dumps([repr(r) for r in requests])
    outcomes = focuser.rank_many(requests, batch_size=2, errors="return")
    assert json.dumps([repr(r) for r in requests]) == snapshot  # inputs are not mutated
    assert len(outcomes) == len(requests)
    assert isinstance(outcomes[1], ValueError) and "query is empty" in str(outcomes[1])
    assert isinstance(outcomes[3], TypeError)
    for number in (0, 2, 4):
        query, passages = requests[number]
        alone = focuser.rank(query, passages)
        together = outcomes[number]
        assert [p.index for p in together] == [p.index for p in alone]
        for a, b in zip(alone, together):
            assert (math.isinf(a.score) and a.score == b.score) or b.score == pytest.approx(a.score, abs=1e-4)
    assert outcomes[0][0].parts or any(p.parts for p in outcomes[0])  # the long text was scored in parts
    assert outcomes[4][0].passage.metadata == {"k": [1]} or outcomes[4][1].passage.metadata == {"k": [1]}
    with pytest.raises(ValueError, match="query is empty"):
        focuser.rank_many(requests, errors="raise")
    with pytest.raises(ValueError, match="batch_size"):
        focuser.rank_many(requests[:1], batch_size=0)


def test_focus_many_equals_focus(tiny_model: LoadedModel) -> None:
    focuser = Focuser(tiny_model)
    requests = [
        ("Where is Paris?", ["Paris is the capital of France.", "The Nile flows north.", "France borders Spain."]),
        ("Who wrote Hamlet?", ["Hamlet is a play by Shakespeare.", "Macbeth is a tragedy."]),
    ]
    many = focuser.focus_many(requests, budget=12, order="original", batch_size=2)
    for (query, passages), together in zip(requests, many):
        alone = focuser.focus(query, passages, budget=12, order="original")
        assert together.context == alone.context
        assert [p.index for p in together.kept] == [p.index for p in alone.kept]
        assert together.tokens_in == alone.tokens_in and together.tokens_out == alone.tokens_out


def test_distraction_prompts_tokenized_together_equal_one_by_one(default_model: LoadedModel) -> None:
    tokenizer = default_model.tokenizer
    pairs = [("Who wrote Hamlet?", "Hamlet is a play."), ("Where?", "  spaced  text\nwith lines "), ("Q", "<b>markup</b> & more")]
    prompts, answer = distraction_prompt_ids_many(tokenizer, pairs)
    for (question, passage), ids in zip(pairs, prompts):
        single, single_answer = distraction_prompt_ids(tokenizer, question, passage)
        assert ids == single and answer == single_answer


def test_distraction_of_many_pairs_equals_pair_by_pair(tiny_model: LoadedModel) -> None:
    """Length-sorted batches across pairs, right-padded, give each pair's own scores."""
    queries = [
        ("Who wrote Hamlet?", ["Hamlet is a play by Shakespeare.", "The Nile flows north through Egypt and Sudan."]),
        ("Where is Paris?", ["Paris is in France."]),
        ("Which river?", ["A", "The Danube " * 20, "Rivers."]),
    ]
    many = distraction_scores_many(tiny_model.model, tiny_model.tokenizer, queries, batch_size=2)
    assert [len(found.abstain_logprob) for found in many] == [2, 1, 3]
    for (question, passages), found in zip(queries, many):
        alone = distraction_scores(tiny_model.model, tiny_model.tokenizer, question, passages, batch_size=1)
        assert found.abstain_logprob == pytest.approx(alone.abstain_logprob, abs=1e-4)
        assert found.distraction == pytest.approx(alone.distraction, abs=1e-4)


def test_bench_reports_every_phase(tiny_model: LoadedModel) -> None:
    focuser = Focuser(tiny_model)
    questions = hotpotqa(0, 3)
    report = run_bench(focuser, questions, batch_size=2, single_questions=2, repeat=3, focus_budget=50)
    assert [phase.name for phase in report.phases] == ["bare_forward", "rank_many", "focus_many", "rank_one_at_a_time"]
    runs = report.extra["runs"]
    assert len(runs["bare_forward"]) == len(runs["rank_many"]) == len(runs["focus_many"]) == 3
    assert report.phases[1].seconds == sorted(runs["rank_many"])[1]  # the median run
    assert len(runs["rank_many_events"]) == 3
    assert report.extra["rank_many_seconds"] in runs["rank_many_split"]  # the median run's split is one of them
    assert len(runs["rank_many_split"]) == 3 and all(split["device"] > 0 for split in runs["rank_many_split"])
    assert all(len(run["collections"]) == 3 and min(run["collections"]) >= 0 and run["device_allocations"] is None for run in runs["rank_many_events"])
    split = report.extra["rank_many_seconds"]
    assert split["total"] > 0 and split["prepare"] > 0 and split["device"] > 0
    assert 0 < split["fill"] < split["total"] and 0 < split["drain"] < split["total"]
    assert report.count == 3 and report.questions == (0, 2)
    assert report.extra["transformers"] == transformers.__version__ and report.extra["torch"] == torch.__version__
    assert all(phase.seconds > 0 and phase.queries_per_second > 0 for phase in report.phases)
    assert report.rank_over_forward is not None and report.rank_over_forward > 0
    assert report.peak_flops is None and report.share_of_peak(report.phases[0]) is None  # CPU: no data-sheet peak
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["phases"][1]["tokens"] == payload["phases"][0]["tokens"] > 0
    text = render_bench(report)
    assert "rank_many" in text and "bare forward" in text and "median of runs" in text
    assert "garbage collections" in text
    assert "device worker seconds" in text
    assert "focus_many / rank_many, time per query" in text
    with pytest.raises(ValueError, match="repeat"):
        run_bench(focuser, questions, batch_size=2, repeat=0)


def test_forward_flops_counts_parameters_and_attention(tiny_model: LoadedModel) -> None:
    model = tiny_model.model
    embedding = model.get_input_embeddings().weight.numel()
    parameters = sum(p.numel() for p in model.base_model.parameters()) - embedding
    config = model.config
    expected = 2 * parameters * 10 + 2 * config.num_hidden_layers * config.hidden_size * 100
    assert forward_flops(model, [10]) == expected
    assert forward_flops(model, [10, 10]) == 2 * expected


def test_compare_rankings_counts_top2_and_score_differences() -> None:
    def recording(orders, scores):
        return {"format": "ragfocus-rankings/1", "questions": [
            {"index": i, "order": o, "scores": s} for i, (o, s) in enumerate(zip(orders, scores))
        ]}

    reference = recording([[0, 1, 2], [2, 1, 0]], [[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    candidate = recording([[1, 0, 2], [2, 0, 1]], [[2.9, 3.1, 1.0], [1.5, 1.2, 3.0]])
    agreement = compare_rankings(reference, candidate)
    assert agreement.same_top2 == 0.5 and agreement.same_top1 == 0.5
    assert agreement.differing == [1]
    assert agreement.max_score_difference == pytest.approx(1.1)
    assert agreement.signals_not_shared == []
    with_distraction = {**reference, "signals": ["retrieval_heads", "distraction"]}
    without = {**candidate, "signals": ["retrieval_heads"]}
    assert compare_rankings(with_distraction, without).signals_not_shared == ["distraction"]
    with pytest.raises(ValueError, match="share no question"):
        compare_rankings(reference, recording([], []))
    with pytest.raises(ValueError, match="not a ragfocus-rankings"):
        compare_rankings({"questions": []}, candidate)


def test_bench_report_ratio_is_per_query() -> None:
    from ragfocus.evaluation.bench import PhaseTiming

    report = BenchReport(model="m", device="cuda", device_name="NVIDIA H100 80GB HBM3", dtype="bfloat16", batch_size=8,
                         distraction=False, questions=(0, 99), count=100, mean_prompt_tokens=1.0, forward_flops=1e15,
                         peak_flops=1e15)
    report.phases += [PhaseTiming("bare_forward", 100, 1.0, 100, 10.0), PhaseTiming("rank_many", 100, 1.2, 100, 12.0)]
    assert report.rank_over_forward == pytest.approx(1.2)
    assert report.share_of_peak(report.phases[0]) == pytest.approx(1.0)
    assert report.share_of_peak(report.phases[1]) == pytest.approx(1 / 1.2)


def test_results_that_fail_on_the_way_back_send_the_batch_one_at_a_time(
    default_focuser: Focuser, dev_questions, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker launches a batch and moves on; an error that only shows when its results are
    read (an asynchronous CUDA error of a batch too large, say) still sends that batch to the
    one-at-a-time path, with errors='return' (raised with the default errors='raise'). The
    failure here strikes batches of more than one prompt, so the requests retried alone pass."""
    import logging

    import ragfocus.pipeline.device as device_module

    requests = [(q.question, q.paragraphs[:3]) for q in dev_questions[:2]]
    expected = [default_focuser.rank(query, passages) for query, passages in requests]
    launch = device_module.launch_prompt_signals

    def failing_on_read(captured, *args, **kwargs):
        pending = launch(captured, *args, **kwargs)
        if captured.shape[0] == 1:
            return pending

        class Failing:
            def result(self):
                raise RuntimeError("the copy back failed")

        return Failing()

    monkeypatch.setattr(device_module, "launch_prompt_signals", failing_on_read)
    with caplog.at_level(logging.WARNING, logger="ragfocus"):
        batched = default_focuser.rank_many(requests, batch_size=2, errors="return")
    assert "one at a time" in caplog.text and "the copy back failed" in caplog.text
    for alone, together in zip(expected, batched):
        assert [p.index for p in together] == [p.index for p in alone]
        assert [p.score for p in together] == pytest.approx([p.score for p in alone], abs=1e-6)
    with pytest.raises(RuntimeError, match="the copy back failed"):
        default_focuser.rank_many(requests, batch_size=2, errors="raise")
