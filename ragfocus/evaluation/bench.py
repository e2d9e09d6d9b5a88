"""``ragfocus bench``: throughput of ``Focuser.rank`` against a bare forward pass, in one run.

On the same model, device and HotpotQA prompts it times, in this order:

1. a bare batched forward of the model over the ranking prompts (prefix and query, padded and
   length-sorted exactly as ``Focuser.rank_many`` pads them, no attention output, no LM head),
   from token ids already on the host, with the model as ``Focuser`` runs it (its RMSNorms
   fused on CUDA: ``ragfocus.engine.fused``) and, when some norms are fused, once more with
   transformers' own norms, the plain ``transformers`` baseline; with distraction on, also a
   bare forward over every prompt ``Focuser.rank_many`` reads (the ranking prompts as above,
   then the ten distraction prompts of each question, each prompt run whole, packed end to end
   without padding as ``rank_many`` packs them: ``packed_forward``), the like-for-like
   yardstick of a Focuser that runs two passes;
2. ``Focuser.rank_many`` from the strings (tokenization, capture, distraction, fusion:
   everything a caller waits for);
3. optionally ``Focuser.rank`` one query at a time, on the first questions, for the batching
   speed-up;
4. optionally LongLLMLingua's ranking (``llmlingua``'s own code, Jiang et al., ACL 2024) on the
   same model object, as a peer row.

Each phase starts after a warm-up batch and ends with a device synchronisation; peak GPU
memory is reset before each. The share of the GPU's peak bf16 throughput is the model FLOPs of
one forward over the prompts (2 x non-embedding parameters per token plus causal attention)
divided by the phase's seconds and by the chip's dense bf16 peak from its data sheet.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import torch
import transformers

from ragfocus.engine.capture import require_capture_attention
from ragfocus.engine.compiled import compiled_module_count
from ragfocus.engine.fused import fused_norm_count, unfused_norms
from ragfocus.engine.kernels import batched_attention_kernels, padded_width
from ragfocus.engine.varlen import UNUSED_MASK, packed_ids, packed_positions, packed_prompts, packed_row
from ragfocus.evaluation.datasets import HotpotQuestion
from ragfocus.evaluation.run_events import EventRecorder, RunEvents
from ragfocus.focuser import Focuser
from ragfocus.prompt import build_prompt
from ragfocus.scoring.distraction import PACKED_TOKENS, packed_chunks, tokenize_distraction

logger = logging.getLogger(__name__)

PEAK_BF16_DENSE = (
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),
    ("H200", 989.4e12),
    ("GH200", 989.4e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)
"""Dense bf16 tensor-core peak (FLOP/s) by device-name fragment, first match wins (NVIDIA data
sheets; the SXM figure for H100/H200 without "PCIe" in the name)."""


@dataclass(frozen=True)
class PhaseTiming:
    """One timed phase."""

    name: str
    queries: int
    seconds: float
    tokens: int
    peak_memory_mib: float | None

    @property
    def queries_per_second(self) -> float:
        return self.queries / self.seconds if self.seconds > 0 else float("nan")

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class BenchReport:
    """What ``ragfocus bench`` measured; ``to_dict`` is its JSON."""

    model: str
    device: str
    device_name: str
    dtype: str
    batch_size: int
    distraction: bool
    questions: tuple[int, int]
    """First and last HotpotQA dev index."""
    count: int
    """Questions in the bare-forward and ``rank_many`` phases."""
    mean_prompt_tokens: float
    forward_flops: float
    """Model FLOPs of one forward over every prompt (non-embedding matmuls + causal attention)."""
    peak_flops: float | None
    fused_norms: int = 0
    """RMSNorm modules run as ``rms_norm`` (``ragfocus.engine.fused``) in every phase but
    ``bare_forward_own_norms``."""
    compiled_modules: int = 0
    """MLP and attention modules whose SwiGLU or rotary embedding runs under ``torch.compile``
    (``ragfocus.engine.compiled``) in every phase."""
    phases: list[PhaseTiming] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def phase(self, name: str) -> PhaseTiming | None:
        return next((phase for phase in self.phases if phase.name == name), None)

    @property
    def rank_over_forward(self) -> float | None:
        """Seconds of ``Focuser.rank_many`` over seconds of the bare forward, same prompts."""
        return self._rank_over("bare_forward")

    @property
    def rank_over_own_norms_forward(self) -> float | None:
        """The same over the bare forward with transformers' own norms (``None`` when no norm
        was fused, so that both bare forwards are the same)."""
        return self._rank_over("bare_forward_own_norms")

    @property
    def rank_over_all_prompts_forward(self) -> float | None:
        """The same over the bare forward of every prompt ``rank_many`` reads, distraction
        prompts included (``None`` without distraction)."""
        return self._rank_over("bare_forward_all_prompts")

    def _rank_over(self, bare_phase: str) -> float | None:
        rank, bare = self.phase("rank_many"), self.phase(bare_phase)
        if rank is None or bare is None:
            return None
        return (rank.seconds / rank.queries) / (bare.seconds / bare.queries)

    def share_of_peak(self, phase: PhaseTiming) -> float | None:
        """The forward's FLOPs per second of ``phase`` over the chip's bf16 peak."""
        if self.peak_flops is None or phase.seconds <= 0:
            return None
        per_query = self.forward_flops / max(self.count, 1)
        return per_query * phase.queries / phase.seconds / self.peak_flops

    def to_dict(self) -> dict[str, Any]:
        payload = {key: value for key, value in asdict(self).items() if key != "phases"}
        payload["phases"] = [
            {
                **asdict(phase),
                "queries_per_second": phase.queries_per_second,
                "tokens_per_second": phase.tokens_per_second,
                "share_of_peak_bf16": self.share_of_peak(phase),
            }
            for phase in self.phases
        ]
        payload["rank_over_forward"] = self.rank_over_forward
        payload["rank_over_own_norms_forward"] = self.rank_over_own_norms_forward
        payload["rank_over_all_prompts_forward"] = self.rank_over_all_prompts_forward
        return payload


def peak_bf16_flops(device: torch.device) -> float | None:
    """The dense bf16 peak of a CUDA device from ``PEAK_BF16_DENSE``; ``None`` when unknown."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for fragment, peak in PEAK_BF16_DENSE if fragment in name), None)


def forward_flops(model: torch.nn.Module, lengths: Sequence[int]) -> float:
    """2 x non-embedding parameters per token, plus 2 x layers x hidden x n^2 per prompt of n
    tokens for causal attention (QK^T and AV over half the square)."""
    config = model.config
    embedding = model.get_input_embeddings().weight.numel()
    parameters = sum(p.numel() for p in model.base_model.parameters()) - embedding
    layers, hidden = int(config.num_hidden_layers), int(config.hidden_size)
    return float(sum(2 * parameters * n + 2 * layers * hidden * n * n for n in lengths))


def run_bench(
    focuser: Focuser,
    questions: Sequence[HotpotQuestion],
    *,
    batch_size: int,
    single_questions: int = 0,
    peer_questions: int = 0,
    repeat: int = 1,
    focus_budget: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Time the phases above on ``questions`` (all of them for the bare forward and
    ``rank_many``; the first ``single_questions`` / ``peer_questions`` for the others).

    With ``repeat`` > 1 the bare forward and ``rank_many`` run that many times, alternating,
    and each reports its median run; every run's seconds are kept in ``extra["runs"]``. With
    ``focus_budget``, ``focus_many(budget=focus_budget)`` runs after each ``rank_many`` run on
    the same questions (its median is the ``focus_many`` phase)."""
    if not questions:
        raise ValueError("no questions to run")
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    say = progress or (lambda message: logger.info("%s", message))
    loaded = focuser.loaded
    device = loaded.device
    requests = [(q.question, q.paragraphs) for q in questions]
    prompts = [build_prompt(loaded.tokenizer, q.question, q.paragraphs) for q in questions]
    token_ids = [p.prefix_ids + p.query_ids for p in prompts]
    lengths = [len(ids) for ids in token_ids]
    report = BenchReport(
        model=loaded.name,
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        dtype=str(loaded.dtype).removeprefix("torch."),
        batch_size=batch_size,
        distraction=focuser.distraction,
        questions=(questions[0].index, questions[-1].index),
        count=len(questions),
        mean_prompt_tokens=sum(lengths) / len(lengths),
        forward_flops=forward_flops(loaded.model, lengths),
        peak_flops=peak_bf16_flops(device),
        fused_norms=fused_norm_count(loaded.model),
        compiled_modules=compiled_module_count(loaded.model),
        extra={"date": date.today().isoformat(), "torch": torch.__version__, "transformers": transformers.__version__,
               "python": platform.python_version()},
    )
    say("warm-up")
    if focuser.preparation is not None:  # started with the Focuser; its start-up is not timed
        focuser.preparation.wait_ready(120)
    warm = min(batch_size, len(questions))
    bare_forward(loaded.model, token_ids[:warm], batch_size=batch_size)
    focuser.rank_many(requests[:warm], batch_size=batch_size)
    distraction_ids = tokenize_distraction(loaded.tokenizer, requests).sequences if focuser.distraction else []
    distraction_tokens = sum(map(len, distraction_ids))
    if distraction_ids:
        report.extra["distraction_prompts"] = len(distraction_ids)
        report.extra["mean_distraction_tokens_per_question"] = distraction_tokens / len(questions)
        packed_forward(loaded.model, distraction_ids[: warm * 10])

    def all_prompts() -> None:
        bare_forward(loaded.model, token_ids, batch_size=batch_size)
        packed_forward(loaded.model, distraction_ids)

    bare_runs: list[PhaseTiming] = []
    all_prompt_runs: list[PhaseTiming] = []
    rank_runs: list[tuple[PhaseTiming, dict[str, float]]] = []
    rank_events: list[RunEvents] = []
    focus_runs: list[PhaseTiming] = []
    recorder = EventRecorder(device)
    for run in range(1, repeat + 1):
        suffix = f" (run {run} of {repeat})" if repeat > 1 else ""
        say(f"bare forward over {len(questions)} prompts{suffix}")
        bare_runs.append(_timed("bare_forward", device, len(questions), sum(lengths),
                                lambda: bare_forward(loaded.model, token_ids, batch_size=batch_size)))
        if distraction_ids:
            say(f"bare forward over {len(questions)} prompts and their {len(distraction_ids)} distraction prompts{suffix}")
            all_prompt_runs.append(_timed("bare_forward_all_prompts", device, len(questions),
                                          sum(lengths) + distraction_tokens, all_prompts))
        say(f"Focuser.rank_many over {len(questions)} questions{suffix}")
        with recorder:
            timing = _timed("rank_many", device, len(questions), sum(lengths), lambda: focuser.rank_many(requests, batch_size=batch_size))
        rank_runs.append((timing, dict(focuser.last_batch_seconds)))
        if recorder.events is not None:
            rank_events.append(recorder.events)
        if focus_budget is not None:
            say(f"Focuser.focus_many(budget={focus_budget}) over {len(questions)} questions{suffix}")
            focus_runs.append(_timed("focus_many", device, len(questions), sum(lengths),
                                     lambda: focuser.focus_many(requests, budget=focus_budget, batch_size=batch_size)))
    report.phases.append(_median(bare_runs))
    if all_prompt_runs:
        report.phases.append(_median(all_prompt_runs))
    median_rank = _median([timing for timing, _ in rank_runs])
    report.phases.append(median_rank)
    if focus_runs:
        report.phases.append(_median(focus_runs))
    report.extra["rank_many_seconds"] = next(split for timing, split in rank_runs if timing is median_rank)
    report.extra["runs"] = {
        "bare_forward": [timing.seconds for timing in bare_runs],
        "rank_many": [timing.seconds for timing, _ in rank_runs],
        "rank_many_split": [split for _, split in rank_runs],
        "rank_many_events": [asdict(events) for events in rank_events],
    }
    if all_prompt_runs:
        report.extra["runs"]["bare_forward_all_prompts"] = [timing.seconds for timing in all_prompt_runs]
    if focus_runs:
        report.extra["runs"]["focus_many"] = [timing.seconds for timing in focus_runs]
    if report.fused_norms:
        with unfused_norms(loaded.model):
            say(f"bare forward over {len(questions)} prompts with transformers' own norms")
            bare_forward(loaded.model, token_ids[:warm], batch_size=batch_size)
            report.phases.append(_timed("bare_forward_own_norms", device, len(questions), sum(lengths),
                                        lambda: bare_forward(loaded.model, token_ids, batch_size=batch_size)))
    if single_questions:
        count = min(single_questions, len(questions))
        say(f"Focuser.rank one at a time over {count} questions")
        report.phases.append(_timed("rank_one_at_a_time", device, count, sum(lengths[:count]),
                                    lambda: [focuser.rank(q, p) for q, p in requests[:count]]))
    if peer_questions:
        from ragfocus.evaluation.peers import longllmlingua_scores

        count = min(peer_questions, len(questions))
        longllmlingua_scores(loaded, *requests[0])  # its own warm-up
        say(f"LongLLMLingua ranking over {count} questions")
        report.phases.append(_timed("longllmlingua", device, count, sum(lengths[:count]),
                                    lambda: [longllmlingua_scores(loaded, q, p) for q, p in requests[:count]]))
    return report


@torch.inference_mode()
def bare_forward(model: torch.nn.Module, token_ids: Sequence[Sequence[int]], *, batch_size: int) -> None:
    """The model's plain forward (SDPA, causal, no cache, no attention output, no LM head) over
    ``token_ids``, longest first, ``batch_size`` right-padded prompts at a time, with the same
    width rounding and SDPA kernels as ``Focuser.rank_many`` (``ragfocus.engine.kernels``)."""
    device = next(model.parameters()).device
    pad = int(getattr(model.config, "pad_token_id", None) or 0)
    order = sorted(range(len(token_ids)), key=lambda index: -len(token_ids[index]))
    for first in range(0, len(order), batch_size):
        chunk = [token_ids[index] for index in order[first : first + batch_size]]
        width = padded_width(max(len(ids) for ids in chunk))
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        for row, sequence in enumerate(chunk):
            ids[row, : len(sequence)] = torch.tensor(list(sequence), dtype=torch.long)
        # Right padding under the causal mask: no real token sees a pad, so no padding mask is
        # needed (as in Focuser.rank_many's prefix pass); the pads' own outputs are discarded.
        with batched_attention_kernels(device):
            model.base_model(input_ids=ids.to(device), use_cache=False)


@torch.inference_mode()
def packed_forward(model: torch.nn.Module, token_ids: Sequence[Sequence[int]], *, max_tokens: int = PACKED_TOKENS) -> None:
    """The model's plain forward (no cache, no attention output, no LM head) over ``token_ids``
    packed end to end, at most ``max_tokens`` a pass, each prompt attending only to itself
    (``ragfocus.engine.varlen``): no padding is computed. The model must run ragfocus's
    registered attention, as a ``Focuser``'s does."""
    require_capture_attention(model)
    device = next(model.parameters()).device
    for chunk in packed_chunks([len(ids) for ids in token_ids], max_prompts=max(1, len(token_ids)), max_tokens=max_tokens):
        row = packed_row([len(token_ids[index]) for index in chunk], device)
        ids = packed_ids([token_ids[index] for index in chunk])
        with batched_attention_kernels(device), packed_prompts(row):
            model.base_model(
                input_ids=ids.to(device), position_ids=packed_positions(row).to(device), attention_mask=UNUSED_MASK, use_cache=False
            )


def _median(runs: Sequence[PhaseTiming]) -> PhaseTiming:
    """The run of median seconds (the lower middle one of an even count)."""
    return sorted(runs, key=lambda timing: timing.seconds)[(len(runs) - 1) // 2]


def _timed(name: str, device: torch.device, queries: int, tokens: int, work: Callable[[], object]) -> PhaseTiming:
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    work()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return PhaseTiming(name=name, queries=queries, seconds=seconds, tokens=tokens, peak_memory_mib=peak)


def render_bench(report: BenchReport) -> str:
    """The report as a table (rich, plain text)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=(
        f"{report.model} on {report.device_name} ({report.dtype}), batch {report.batch_size}, "
        f"HotpotQA dev {report.questions[0]}-{report.questions[1]}, {report.mean_prompt_tokens:.0f} prompt tokens on average, "
        f"distraction {'on' if report.distraction else 'off'}"
        + (f", {report.compiled_modules} modules with compiled SwiGLU or rotary embedding" if report.compiled_modules else "")
    ))
    for column in ("phase", "queries", "seconds", "queries/s", "tokens/s", "peak GPU MiB", "share of bf16 peak"):
        table.add_column(column, justify="right" if column != "phase" else "left")
    for phase in report.phases:
        share = report.share_of_peak(phase)
        table.add_row(
            phase.name, str(phase.queries), f"{phase.seconds:.2f}", f"{phase.queries_per_second:.1f}",
            f"{phase.tokens_per_second:,.0f}",
            "-" if phase.peak_memory_mib is None else f"{phase.peak_memory_mib:,.0f}",
            "-" if share is None else f"{share:.1%}",
        )
    console = Console(width=160, record=True, file=None)
    with console.capture() as captured:
        console.print(table)
        ratio = report.rank_over_forward
        if ratio is not None:
            console.print(f"Focuser.rank_many / bare forward, time per query: {ratio:.2f}x")
        every = report.rank_over_all_prompts_forward
        if every is not None:
            console.print(f"Focuser.rank_many / bare forward over every prompt it reads (distraction prompts too), time per query: {every:.2f}x")
        own = report.rank_over_own_norms_forward
        if own is not None:
            console.print(
                f"Focuser.rank_many / bare forward with transformers' own norms (the {report.fused_norms} RMSNorms unfused), "
                f"time per query: {own:.2f}x"
            )
        runs = report.extra.get("runs")
        if runs and len(runs["rank_many"]) > 1:
            console.print(
                "median of runs; seconds of each: bare forward "
                + ", ".join(f"{value:.2f}" for value in runs["bare_forward"])
                + "; rank_many " + ", ".join(f"{value:.2f}" for value in runs["rank_many"])
                + ("; bare forward over every prompt " + ", ".join(f"{value:.2f}" for value in runs["bare_forward_all_prompts"])
                   if "bare_forward_all_prompts" in runs else "")
            )
        splits = (runs or {}).get("rank_many_split")
        if splits and len(splits) > 1:
            console.print("rank_many runs' device worker seconds: " + ", ".join(f"{split['device']:.2f}" for split in splits)
                          + "; waiting for the device: " + ", ".join(f"{split['wait']:.2f}" for split in splits))
        events = (runs or {}).get("rank_many_events")
        if events:
            console.print("rank_many runs' garbage collections (young/middle/full: count, seconds): " + "; ".join(
                "/".join(str(count) for count in run["collections"]) + ", " + "/".join(f"{value:.2f}" for value in run["collection_seconds"])
                + ("" if run["device_allocations"] is None else f", {run['device_allocations']} new device allocations, {run['allocation_retries']} retries")
                for run in events
            ))
        split = report.extra.get("rank_many_seconds")
        if split:
            console.print(
                f"rank_many's {split['total']:.2f} s: this thread tokenizing {split['prepare']:.2f} s, fusing {split['finish']:.2f} s, "
                f"waiting for the device {split['wait']:.2f} s; the device worker {split['device']:.2f} s "
                f"(distraction {split['distraction']:.2f} s)"
                + (f"; before the first batch reached the device {split['fill']:.2f} s, after the last came back {split['drain']:.2f} s"
                   if "fill" in split else "")
            )
        focused = report.phase("focus_many")
        if focused is not None and report.phase("rank_many") is not None:
            console.print(f"focus_many / rank_many, time per query: {focused.seconds / report.phase('rank_many').seconds:.2f}x")  # type: ignore[union-attr]
        single, rank = report.phase("rank_one_at_a_time"), report.phase("rank_many")
        if single is not None and rank is not None:
            console.print(f"rank_many / rank one at a time, queries per second: {rank.queries_per_second / single.queries_per_second:.2f}x")
    return captured.get()
