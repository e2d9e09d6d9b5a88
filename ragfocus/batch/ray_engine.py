"""The Ray Data engine: the same job, with the model work spread over Ray actors.

The driver reads the input (so unreadable lines, missing ids, repeated ids and resumed ids
are handled exactly as on one machine), hands the rows to ``ray.data``, runs
``map_batches(FocusWorker, ...)`` (a stateful class: each actor loads the model once), and
streams the results back with ``iter_batches`` into the same atomic, resumable writers as the
local engine. Order is preserved (``preserve_order``), so output rows are in input order.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ragfocus.batch.inputs import read_records
from ragfocus.batch.job import JobWriter, Work, admit
from ragfocus.batch.options import BatchOptions
from ragfocus.batch.process import Outcome, RowProcessor
from ragfocus.batch.summary import BatchSummary

logger = logging.getLogger(__name__)


class FocusWorker:
    """A Ray Data actor: builds its ``Focuser`` once, then focuses one batch per call."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.processor = RowProcessor(BatchOptions(**options))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [(int(line), json.loads(text)) for line, text in zip(batch["line"], batch["record"])]
        outcomes = self.processor.process(records)
        return {
            "line": np.array([outcome.line for outcome in outcomes], dtype=np.int64),
            "outcome": np.array([json.dumps(_as_dict(outcome), ensure_ascii=False) for outcome in outcomes], dtype=object),
        }


def _as_dict(outcome: Outcome) -> dict[str, Any]:
    return {"line": outcome.line, "id": outcome.id, "row": outcome.row, "error": outcome.error}


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ImportError("the ray engine needs Ray Data: pip install 'ragfocus[ray]'") from error
    return ray


def run_ray(
    input_path: str | Path,
    output: str | Path,
    options: BatchOptions,
    *,
    address: str | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    errors: str | Path | None = None,
    part_rows: int = 100,
    progress: bool = True,
) -> BatchSummary:
    """Run the batch job through Ray Data on ``address`` (``None``: the Ray instance this
    process already has, else a new local one; ``"auto"`` or ``ray://host:port``: a cluster).

    ``workers`` actors each hold one model; ``options.batch_size`` rows go to an actor at a time.
    ``gpus_per_worker=None`` gives each actor one GPU when ``options.device`` is CUDA, or when it
    is ``None`` and the cluster has GPUs; else none.
    """
    ray = _ray()
    writer = JobWriter(input_path, output, engine="ray", resume=resume, overwrite=overwrite, errors=errors,
                       part_rows=part_rows, progress=progress)
    started_ray = False
    try:
        items: list[dict[str, Any]] = []
        for item in admit(read_records(input_path), writer.done):
            if item is None:
                writer.skip()
            elif isinstance(item, Work):
                # default=str: fields a Parquet input may hold that JSON lacks (timestamps, bytes)
                items.append({"line": item.line, "record": json.dumps(item.record, ensure_ascii=False, default=str)})
            else:
                writer.record([item])
        if items:
            if not ray.is_initialized():
                ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
                started_ray = True
            if gpus_per_worker is None:
                gpus_per_worker = 1.0 if _wants_gpu(options.device, ray.cluster_resources().get("GPU", 0)) else 0.0
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True
            context.enable_progress_bars = False
            dataset = ray.data.from_items(items).map_batches(
                FocusWorker,
                fn_constructor_kwargs={"options": options.to_dict()},
                batch_size=options.batch_size,
                concurrency=workers,
                num_cpus=cpus_per_worker,
                num_gpus=gpus_per_worker,
                batch_format="numpy",
            )
            for batch in dataset.iter_batches(batch_size=options.batch_size, batch_format="numpy"):
                writer.record([_outcome(json.loads(text)) for text in batch["outcome"]])
    finally:
        summary = writer.finish()
        if started_ray:
            ray.shutdown()
    logger.info(summary.describe())
    return summary


def _wants_gpu(device: str | None, cluster_gpus: float) -> bool:
    return device.startswith("cuda") if device is not None else cluster_gpus > 0


def _outcome(data: dict[str, Any]) -> Outcome:
    return Outcome(data["line"], data["id"], row=data["row"], error=data["error"])
