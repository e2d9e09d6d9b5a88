"""Retrieval-head profiles: detection (qr, niah), the profile format, identity checks, the
bundled profile, ``heads="auto"`` and the fallback.

Detection runs on the real default model wherever the heads it finds are what is tested; the
tiny random model only exercises plumbing (resume, identity, caching).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch

from ragfocus import Focuser, LoadedModel
from ragfocus.cli import main
from ragfocus.detection import detect_heads
from ragfocus.detection import niah as niah_method
from ragfocus.detection import qr as qr_method
from ragfocus.detection.plot import agreement, plot_profiles
from ragfocus.detection.store import ResumableRecord, SettingsMismatchError
from ragfocus.engine import AttentionEngine
from ragfocus.head_choice import auto_profile_path
from ragfocus.head_profile import (
    HeadProfile,
    ModelIdentity,
    ProfileMismatchError,
    bundled_profile,
    bundled_profile_names,
    load_profile,
)
from ragfocus.scoring.heads import middle_layer_heads


@pytest.fixture(scope="module")
def tiny_profile(tiny_model: LoadedModel) -> HeadProfile:
    return detect_heads(tiny_model, "qr", start=0, limit=2, top_k=3, progress=False)


# --- the bundled profiles -------------------------------------------------------------------


def test_bundled_profiles_belong_to_the_default_model(default_model: LoadedModel) -> None:
    assert bundled_profile_names() == ["smollm2-135m-instruct.niah.json", "smollm2-135m-instruct.qr.json"]
    for name in bundled_profile_names():
        profile = bundled_profile(name)
        profile.check_model(default_model)  # raises if the identity does not match
        assert profile.model.weights_sha256 == default_model.weights_sha256
        assert len(profile.scores) == 30 and all(len(row) == 9 for row in profile.scores)
        assert profile.selected == profile.ranked()[: len(profile.selected)]
    qr_profile = bundled_profile("smollm2-135m-instruct.qr.json")
    assert qr_profile.method == "qr" and qr_profile.data["start"] + qr_profile.data["limit"] <= 3000  # development only


def test_default_focuser_reads_the_bundled_qr_heads(default_focuser: Focuser) -> None:
    profile = bundled_profile("smollm2-135m-instruct.qr.json")
    assert default_focuser.profile == profile
    assert default_focuser.heads == profile.heads
    assert default_focuser.heads_source.startswith("bundled qr head profile")


def test_the_two_methods_agree_on_some_heads_and_the_plot_is_written(tmp_path: Path) -> None:
    qr_profile = bundled_profile("smollm2-135m-instruct.qr.json")
    niah_profile = bundled_profile("smollm2-135m-instruct.niah.json")
    agreed = agreement(qr_profile, niah_profile, 8)
    assert agreed.shared, "the two methods share no top-8 head"
    assert -1.0 <= agreed.spearman <= 1.0
    target = plot_profiles([qr_profile, niah_profile], tmp_path / "heads.png")
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 10_000


# --- identity -------------------------------------------------------------------------------


def test_a_profile_for_another_model_is_refused_with_a_clear_error(
    tiny_profile: HeadProfile, default_model: LoadedModel, tmp_path: Path
) -> None:
    path = tiny_profile.save(tmp_path / "tiny.json")
    with pytest.raises(ProfileMismatchError, match=r"made for .*4 layers x 8 heads.* smollm2-135m-instruct \(30 x 9\)"):
        load_profile(path, default_model)
    with pytest.raises(ProfileMismatchError):
        Focuser(default_model, heads=path)
    # Same shape, other weights: refused on the hash.
    forged = dataclasses.replace(
        bundled_profile("smollm2-135m-instruct.qr.json"),
        model=dataclasses.replace(ModelIdentity.of(default_model), weights_sha256="0" * 64),
    )
    with pytest.raises(ProfileMismatchError, match="weights sha256 0000000000000000"):
        Focuser(default_model, heads=forged)


def test_profile_json_round_trip_and_malformed_files(tiny_profile: HeadProfile, tmp_path: Path) -> None:
    path = tiny_profile.save(tmp_path / "profile.json")
    payload = json.loads(path.read_text())
    assert payload["format"] == "ragfocus-head-profile/1"
    assert set(payload) >= {"model", "method", "data", "parameters", "created", "scores", "selected"}
    assert payload["model"]["weights_sha256"] == tiny_profile.model.weights_sha256
    assert HeadProfile.load(path) == tiny_profile
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        HeadProfile.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a ragfocus head profile"):
        HeadProfile.load(tmp_path / "other.json")
    with pytest.raises(ValueError, match="selected head"):
        dataclasses.replace(tiny_profile, selected=[(9, 0)])


# --- choosing heads -------------------------------------------------------------------------


def test_a_model_without_a_profile_falls_back_to_the_middle_layers_with_a_warning(
    tiny_model: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        focuser = Focuser(tiny_model)
    assert focuser.heads == middle_layer_heads(4, 8) and focuser.profile is None
    assert "no head profile" in caplog.text and "heads='auto'" in caplog.text


def test_heads_auto_detects_once_and_then_reads_the_cache(
    tiny_model: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGFOCUS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("ragfocus.head_choice.AUTO_QUESTIONS", 2)
    first = Focuser(tiny_model, heads="auto")
    assert Path(auto_profile_path(tiny_model)).is_file()
    assert first.heads_source.startswith("auto-detected qr head profile")

    def no_detection(*args, **kwargs):
        raise AssertionError("the cached profile should have been read")

    monkeypatch.setattr("ragfocus.detection.detect_heads", no_detection)
    second = Focuser(tiny_model, heads="auto")
    assert second.profile == first.profile


def test_bad_heads_arguments_are_refused(tiny_model: LoadedModel) -> None:
    with pytest.raises(TypeError, match="heads must be"):
        Focuser(tiny_model, heads=3)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        Focuser(tiny_model, heads="no-such-profile.json")


# --- detection ------------------------------------------------------------------------------


def test_qr_detection_resumes_after_a_kill_and_gives_the_same_profile(tiny_model: LoadedModel, tmp_path: Path) -> None:
    work = tmp_path / "qr.work.jsonl"
    complete = detect_heads(tiny_model, "qr", start=0, limit=3, top_k=4, work_file=work, progress=False)
    lines = work.read_text().splitlines()
    assert len(lines) == 4  # settings header + 3 questions
    # A run killed while writing its second question: one whole record and a torn line.
    work.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][: len(lines[2]) // 2])
    resumed = detect_heads(tiny_model, "qr", start=0, limit=3, top_k=4, work_file=work, progress=False)
    assert torch.allclose(torch.tensor(resumed.scores), torch.tensor(complete.scores), atol=1e-6)
    assert resumed.selected == complete.selected
    assert len(work.read_text().splitlines()) == 4
    with pytest.raises(SettingsMismatchError, match="sink_factor"):
        detect_heads(tiny_model, "qr", start=0, limit=3, work_file=work, sink_factor=10.0, progress=False)


def test_detection_refuses_the_validation_and_held_out_questions(tiny_model: LoadedModel) -> None:
    with pytest.raises(ValueError, match="development split"):
        detect_heads(tiny_model, "qr", start=2990, limit=20, progress=False)
    with pytest.raises(ValueError, match="method"):
        detect_heads(tiny_model, "attention", progress=False)


def test_qr_detection_on_the_default_model_is_reproducible_and_finds_middle_layer_heads(tmp_path: Path) -> None:
    outputs = []
    for run in range(2):
        target = tmp_path / f"qr-{run}.json"
        assert main(["heads", "detect", "--method", "qr", "--start", "0", "--limit", "2", "--top-k", "6",
                     "--output", str(target), "--no-progress"]) == 0
        outputs.append(HeadProfile.load(target))
    assert outputs[0].selected == outputs[1].selected
    assert outputs[0].scores == outputs[1].scores
    assert all(5 <= layer <= 25 for layer, _ in outputs[0].selected)  # retrieval heads sit in the middle


def test_niah_detection_on_the_default_model_finds_heads_that_copy_the_needle(default_model: LoadedModel) -> None:
    first = detect_heads(default_model, "niah", lengths=(400,), depths=(0.5,), needles=1, top_k=4, progress=False)
    second = detect_heads(default_model, "niah", lengths=(400,), depths=(0.5,), needles=1, top_k=4, progress=False)
    assert first.selected == second.selected and first.scores == second.scores
    assert first.notes["mean_answer_recall"] > 0.8  # the model does find and repeat the needle
    best_layer, best_head = first.selected[0]
    assert first.scores[best_layer][best_head] > 0.3  # a head copied a third of the needle or more


def test_needle_prompt_places_the_needle_at_the_requested_depth(default_model: LoadedModel) -> None:
    tokenizer = default_model.tokenizer
    for depth in (0.0, 0.5, 1.0):
        prompt = niah_method.build_needle_prompt(tokenizer, niah_method.NeedleCase(600, depth, 0))
        start, end = prompt.needle_span
        assert tokenizer.decode(prompt.ids[start:end]).strip() == niah_method.NEEDLES[0][0]
        assert prompt.ids[-3:] == tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"][-3:]
    shallow = niah_method.build_needle_prompt(tokenizer, niah_method.NeedleCase(600, 0.0, 0)).needle_span[0]
    deep = niah_method.build_needle_prompt(tokenizer, niah_method.NeedleCase(600, 1.0, 0)).needle_span[0]
    assert deep - shallow > 450
    with pytest.raises(ValueError, match="depth"):
        niah_method.cases((512,), (1.5,), 1)


def test_greedy_decode_matches_generate_and_reports_attention_rows(default_model: LoadedModel) -> None:
    tokenizer = default_model.tokenizer
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    expected = default_model.model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1]:].tolist()
    steps = AttentionEngine(default_model.model).greedy_decode(ids[0].tolist(), max_new_tokens=6, heads={3: [0, 1], 17: [4]})
    assert [step.token for step in steps] == expected
    for number, step in enumerate(steps):
        assert step.attention.shape == (3, ids.shape[1] + number)
        assert torch.allclose(step.attention.sum(dim=-1), torch.ones(3), atol=1e-4)


# --- pure parts -----------------------------------------------------------------------------


def test_qr_criteria_on_hand_made_scores() -> None:
    # Two questions, 2 layers x 1 head, 3 passages; gold passages given per question.
    records = [
        {"gold": [0], "scores": [[0.9, 0.1, 0.0], [0.2, 0.5, 0.4]]},
        {"gold": [2], "scores": [[0.1, 0.0, 0.2], [0.0, 0.1, 3.0]]},
    ]
    mass = qr_method.head_scores(records, 2, 1, "mass")
    assert [row[0] for row in mass] == pytest.approx([(0.9 + 0.2) / 2, (0.2 + 3.0) / 2])
    recall = qr_method.head_scores(records, 2, 1, "recall")
    assert recall[0][0] == pytest.approx(1.0, abs=1e-5)  # head (0, 0) puts gold in its top 2 both times
    assert recall[1][0] == pytest.approx(0.5, abs=1e-5)  # head (1, 0) misses question 1's gold
    with pytest.raises(ValueError, match="criterion"):
        qr_method.head_scores(records, 2, 1, "best")  # type: ignore[arg-type]


def test_copy_hits_counts_needle_positions_holding_the_generated_token() -> None:
    prompt = niah_method.NeedlePrompt(ids=[5, 6, 7, 8, 9, 10], needle_span=(2, 5))  # needle = 7, 8, 9
    rows = torch.zeros(2, 3, 6)  # two steps, three heads, six positions
    rows[0, 0, 2] = rows[1, 0, 3] = 1.0  # head 0 copies 7 then 8
    rows[0, 1, 2] = rows[1, 1, 2] = 1.0  # head 1 looks at 7 twice: one copy
    rows[0, 2, 0] = rows[1, 2, 5] = 1.0  # head 2 looks outside the needle
    hits = niah_method.copy_hits(prompt, [7, 8], [rows[0], rows[1]])
    assert hits.tolist() == [2.0, 1.0, 0.0]


def test_resumable_record_ignores_a_torn_line_and_refuses_other_settings(tmp_path: Path) -> None:
    path = tmp_path / "work.jsonl"
    record = ResumableRecord(path, {"a": 1})
    record.add("x", {"value": 1})
    with path.open("a") as handle:
        handle.write('{"key": "y", "val')
    reopened = ResumableRecord(path, {"a": 1})
    assert "x" in reopened and "y" not in reopened and len(reopened) == 1
    reopened.add("y", {"value": 2})
    assert [entry["key"] for entry in ResumableRecord(path, {"a": 1})] == ["x", "y"]
    with pytest.raises(SettingsMismatchError, match="a differ"):
        ResumableRecord(path, {"a": 2})


def test_cli_shows_a_bundled_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["heads", "show", "smollm2-135m-instruct.qr.json", "--top", "5"]) == 0
    shown = capsys.readouterr().out
    assert "qr head profile for smollm2-135m-instruct" in shown and "best 5 heads" in shown
