"""``ragfocus batch`` and ``ragfocus index``: both engines on the real default model, bad rows,
kill-and-resume, and the atomic writers."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ragfocus import Focuser, LoadedModel
from ragfocus.batch import EXIT_ROWS_FAILED, BatchOptions, read_output, run_local, run_ray
from ragfocus.batch.sinks import ParquetSink, errors_path, open_output
from ragfocus.cli import main

REPOSITORY = Path(__file__).resolve().parents[1]

PASSAGES = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889.",
    "Bananas are rich in potassium and grow in tropical climates.",
    "Gustave Eiffel's company designed and built the tower for the World's Fair.",
]
GOOD_ROWS: list[dict[str, Any]] = [
    {"id": "q1", "query": "Who built the Eiffel Tower?", "passages": PASSAGES, "metadata": {"split": "test", "n": 1}},
    {"id": 2, "query": "Where do bananas grow?", "passages": [
        {"id": "p1", "text": PASSAGES[1], "metadata": {"source": "fruit"}, "score": 0.9},
        {"id": "p2", "text": PASSAGES[0], "score": 0.1},
        {"text": "   "},
    ]},
    {"id": "q3", "query": "When was the tower completed?", "passages": PASSAGES[::-1]},
]
CORPUS = [
    {"id": "c1", "text": PASSAGES[0], "year": 1889},
    {"id": "c2", "text": PASSAGES[1], "metadata": {"topic": "fruit"}},
    {"id": "c3", "text": PASSAGES[2]},
]


@pytest.fixture(scope="module")
def fast_focuser(default_model: LoadedModel) -> Focuser:
    """The default model and fusion, without the distraction pass (one forward pass fewer)."""
    return Focuser(default_model, distraction=False)


def _write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _without_timings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: value for key, value in row.items() if key != "timings"} for row in rows]


def test_local_engine_focuses_good_rows_and_files_bad_ones(tmp_path: Path, fast_focuser: Focuser) -> None:
    index_dir = tmp_path / "index"
    _write_jsonl(tmp_path / "corpus.jsonl", CORPUS)
    assert main(["index", str(tmp_path / "corpus.jsonl"), str(index_dir)]) == 0
    lines: list[Any] = [
        GOOD_ROWS[0],
        "{not json",
        {"id": "no-query", "passages": PASSAGES},
        GOOD_ROWS[1],
        {"id": "q1", "query": "repeated id", "passages": PASSAGES},
        {"id": "bad-passages", "query": "q?", "passages": "one string"},
        {"id": "bad-text", "query": "q?", "passages": [{"text": 7}]},
        {"id": "too-long", "query": "why " * 9000, "passages": PASSAGES},
        {"id": "retrieved", "query": "Who designed the tower?", "corpus": str(index_dir), "k": 2},
        {"id": "no-index", "query": "q?", "corpus": str(tmp_path / "missing")},
        GOOD_ROWS[2],
    ]
    source = _write_jsonl(tmp_path / "in.jsonl", lines)
    before = source.read_bytes()
    output = tmp_path / "out.jsonl"
    options = BatchOptions(budget=40, batch_size=3)
    summary = run_local(source, output, options, focuser=fast_focuser, progress=False)

    assert (summary.succeeded, summary.failed, summary.skipped) == (4, 7, 0)
    assert summary.exit_code == EXIT_ROWS_FAILED == 3
    assert "4 succeeded, 7 failed" in summary.describe()
    assert source.read_bytes() == before  # the input is never touched
    rows = read_output(output)
    assert [row["id"] for row in rows] == ["q1", "2", "retrieved", "q3"]  # input order
    first = rows[0]
    assert first["query"] == GOOD_ROWS[0]["query"] and first["metadata"] == {"split": "test", "n": 1}
    assert 0 < first["tokens_out"] <= 40 < first["tokens_in"] and first["budget"] == 40 and first["order"] == "relevance"
    assert first["context"] == "\n\n".join(passage["text"] for passage in first["kept"])
    assert sorted(p["index"] for p in first["kept"] + first["dropped"]) == [0, 1, 2]
    assert all(set(p["signals"]) == set(fast_focuser.signal_names) for p in first["kept"] + first["dropped"])
    assert all(p["text"] is None for p in first["dropped"])
    assert set(first["timings"]) == {"retrieve_s", "focus_s", "total_s"} and first["timings"]["focus_s"] > 0
    # Passage ids, metadata and retriever scores survive; an empty passage ranks last with null score.
    second = {p["index"]: p for p in rows[1]["kept"] + rows[1]["dropped"]}
    assert second[0]["id"] == "p1" and second[0]["metadata"] == {"source": "fruit"} and second[0]["signals"]["retriever"] == 0.9
    assert second[2]["score"] is None and second[2]["rank"] == 2
    retrieved = rows[2]["kept"] + rows[2]["dropped"]
    assert {p["id"] for p in retrieved} == {"c1", "c3"}  # the two tower passages of the index, by MiniLM
    assert {"year": 1889} in [p["metadata"] for p in retrieved] and rows[2]["timings"]["retrieve_s"] > 0

    errors = [json.loads(line) for line in errors_path(output).read_text().splitlines()]
    assert [(e["line"], e["id"], e["kind"]) for e in errors] == [
        (2, None, "json"), (3, "no-query", "schema"), (5, "q1", "duplicate"), (6, "bad-passages", "schema"),
        (7, "bad-text", "schema"), (8, "too-long", "focus"), (10, "no-index", "retrieval"),
    ]
    assert "no room is left for a passage" in errors[5]["reason"] and "ragfocus index" in errors[6]["reason"]

    # Resuming skips what is written and retries what failed; the errors file is rewritten.
    again = run_local(source, output, options, focuser=fast_focuser, resume=True, progress=False)
    assert (again.succeeded, again.failed, again.skipped) == (0, 7, 4)
    assert len(read_output(output)) == 4 and len(errors_path(output).read_text().splitlines()) == 7


def test_parquet_in_and_out_match_jsonl(tmp_path: Path, fast_focuser: Focuser) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "q1", "query": GOOD_ROWS[0]["query"], "passages": PASSAGES}, {"id": "q4", "query": "", "passages": PASSAGES}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    options = BatchOptions(ratio=0.5, order="original", granularity="sentence", batch_size=1)
    summary = run_local(tmp_path / "in.parquet", tmp_path / "out.parquet", options, focuser=fast_focuser, part_rows=1,
                        progress=False)
    assert (summary.succeeded, summary.failed) == (1, 1)
    assert sorted(path.name for path in (tmp_path / "out.parquet").iterdir()) == ["part-00000.parquet"]
    assert json.loads(errors_path(tmp_path / "out.parquet").read_text()) == {
        "line": 2, "id": "q4", "kind": "schema", "reason": "'query' must be a non-empty str"}
    _write_jsonl(tmp_path / "in.jsonl", rows)
    run_local(tmp_path / "in.jsonl", tmp_path / "out.jsonl", options, focuser=fast_focuser, progress=False)
    from_parquet = read_output(tmp_path / "out.parquet")
    assert _without_timings(from_parquet) == _without_timings(read_output(tmp_path / "out.jsonl"))
    assert from_parquet[0]["granularity"] == "sentence" and from_parquet[0]["order"] == "original"


def test_resume_repairs_a_cut_last_line_and_unfinished_parts(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "que')
    with pytest.raises(FileExistsError, match="--resume"):
        open_output(output, resume=False, overwrite=False)
    sink, state = open_output(output, resume=True, overwrite=False)
    sink.close()
    assert state.done == {"a", "b"} and "truncated last line (16 bytes)" in state.repaired[0]
    assert output.read_text() == '{"id": "a"}\n{"id": "b"}\n'

    output.write_text('{"id": "a"}\n{"id": "b"\n')  # a complete-looking line that is not JSON
    _, state = open_output(output, resume=True, overwrite=False)
    assert state.done == {"a"} and "unreadable last line" in state.repaired[0]
    output.write_text('{"id": "a"\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="line 1 is not an output row"):
        open_output(output, resume=True, overwrite=False)

    directory = tmp_path / "out.parquet"
    directory.mkdir()
    (directory / ".part-00001.parquet.tmp").write_bytes(b"PAR1 cut short")
    sink, state = open_output(directory, resume=True, overwrite=False)
    assert isinstance(sink, ParquetSink) and state.done == set() and "unfinished part file" in state.repaired[0]
    assert list(directory.iterdir()) == []


def _run_cli(source: Path, output: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "ragfocus", "batch", str(source), str(output), "--budget", "40",
               "--no-distraction", "--batch-size", "1", "--no-progress", *extra]
    return subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_killed_run_resumes_to_the_uninterrupted_rows(tmp_path: Path, fast_focuser: Focuser) -> None:
    queries = ["Who built the Eiffel Tower?", "Where do bananas grow?", "When was the tower completed?",
               "What is rich in potassium?", "Which fair was the tower built for?"]
    source = _write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "query": q, "passages": PASSAGES} for i, q in enumerate(queries)])
    output = tmp_path / "out.jsonl"
    process = _run_cli(source, output)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if output.exists() and output.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[1].decode()[-2000:]
    os.kill(process.pid, signal.SIGKILL)  # a crash: no cleanup, no flush
    process.wait()
    written = output.read_bytes().count(b"\n")
    assert 2 <= written < len(queries)

    resumed = _run_cli(source, output, "--resume")
    _, stderr = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, stderr.decode()[-2000:]
    assert f"skipped (already in {output})" in stderr.decode()
    uninterrupted = tmp_path / "whole.jsonl"
    run_local(source, uninterrupted, BatchOptions(budget=40, batch_size=1), focuser=fast_focuser, progress=False)
    rows = read_output(output)
    assert [row["id"] for row in rows] == [f"r{i}" for i in range(len(queries))]  # no duplicate, none missing
    assert _without_timings(rows) == _without_timings(read_output(uninterrupted))


def _close(left: Any, right: Any) -> bool:
    """Equal, with floats within 1e-4 (a Ray actor runs torch on its own thread count)."""
    if isinstance(left, float) and isinstance(right, float):
        return math.isclose(left, right, rel_tol=1e-4, abs_tol=1e-5)
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_close(left[key], right[key]) for key in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_close(a, b) for a, b in zip(left, right))
    return left == right


def test_ray_engine_matches_the_local_engine(tmp_path: Path, fast_focuser: Focuser) -> None:
    ray = pytest.importorskip("ray")
    source = _write_jsonl(tmp_path / "in.jsonl", [*GOOD_ROWS, {"id": "bad", "query": "q?"}])
    options = BatchOptions(budget=40, batch_size=2, distraction=False)
    local = run_local(source, tmp_path / "local.jsonl", options, focuser=fast_focuser, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        summary = run_ray(source, tmp_path / "ray.parquet", options, workers=1, part_rows=2, progress=False)
        resumed = run_ray(source, tmp_path / "ray.parquet", options, resume=True, progress=False)
    finally:
        ray.shutdown()
    assert (summary.succeeded, summary.failed, summary.engine) == (local.succeeded, local.failed, "ray") == (3, 1, "ray")
    assert (resumed.succeeded, resumed.failed, resumed.skipped) == (0, 1, 3)
    assert sorted(path.name for path in (tmp_path / "ray.parquet").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert errors_path(tmp_path / "ray.parquet").read_text() == errors_path(tmp_path / "local.jsonl").read_text()
    by_ray, by_local = _without_timings(read_output(tmp_path / "ray.parquet")), _without_timings(read_output(tmp_path / "local.jsonl"))
    assert [row["id"] for row in by_ray] == [row["id"] for row in by_local] == ["q1", "2", "q3"]
    for ray_row, local_row in zip(by_ray, by_local):
        assert _close(ray_row, local_row), (ray_row, local_row)


def test_batch_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", ["not json"])
    output = tmp_path / "out.jsonl"
    assert main(["batch", str(source), str(output), "--no-progress"]) == 3
    assert "0 succeeded, 1 failed" in capsys.readouterr().err
    assert main(["batch", str(source), str(output), "--no-progress"]) == 2  # exists: --resume or --overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(["batch", str(source), str(tmp_path / "out.csv")]) == 2
    assert main(["batch", str(source), str(output), "--budget", "10", "--ratio", "0.5", "--overwrite"]) == 2
    empty = _write_jsonl(tmp_path / "empty.jsonl", [])
    assert main(["batch", str(empty), str(tmp_path / "e.jsonl"), "--no-progress"]) == 0
