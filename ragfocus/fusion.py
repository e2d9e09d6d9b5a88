"""Signal fusion and positional calibration, as data tuned on development questions.

A fusion profile (``ragfocus-fusion/1``) holds, for one model:

- ``weights``: one weight per signal. Each signal is z-scored over the passages of one query
  (so scales never matter), positional bias is removed, and the weighted sum is the relevance.
  Signals with no value for a query (``retriever`` when the caller gave no scores) drop out.
- ``position_bias``: per signal, the mean z-score of NON-gold passages at each relative
  position of the prompt (bins from first to last), measured on development questions: how
  much a passage gains from where it sits alone. It is subtracted before weighting
  ("Found in the Middle", Hsieh et al., ACL Findings 2024: calibrate attention by position).
- ``slot_strength``: the attention the answering position gives each relative position of
  the context regardless of content; ``order="calibrated"`` puts the best passages in the
  strongest slots (AttnRank, "Attention Basin": reorder to the positions a model attends).
- ``sort_heads`` and ``sort_rounds``: the heads attention sorting reads, and its rounds.
- ``head_weights``: (layer, head, weight) triples; the ``learned_heads`` signal of a passage is
  the weighted sum of each head's calibrated score z-scored over the query's passages (an
  L1-sparse logistic regression fitted on development questions: ``research/fit_head_weights.py``).

Profiles for bundled models ship in ``ragfocus/profiles/*.fusion.json`` (tuned on HotpotQA
dev questions 0-2999 only, with ``research/tune_fusion.py``); a model without one ranks by
its retrieval heads alone.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

from ragfocus.engine import HeadSet
from ragfocus.head_profile import ModelIdentity, ProfileMismatchError, check_identity
from ragfocus.models import LoadedModel
from ragfocus.scoring.heads import head_set
from ragfocus.signals import ABSTAIN_LOGPROB, DISTRACTION, SignalTable

logger = logging.getLogger(__name__)

FUSION_FORMAT = "ragfocus-fusion/1"
FUSED_SIGNALS = ("retrieval_heads", "learned_heads", "attention_sort", "distraction", "bm25", "retriever")
"""Signals a fusion profile may weight."""

DISTRACTION_SIGNALS = ("distraction", "abstain_logprob")

DEFAULT_FUSIONS = {"smollm2-135m-instruct": "smollm2-135m-instruct.fusion.json"}

FusionArgument = Union["FusionProfile", str, os.PathLike, None]


@dataclass(frozen=True)
class FusionProfile:
    """Weights, positional calibration and attention-sort settings for one model."""

    model: ModelIdentity | None
    """``None`` for the model-independent heads-only fallback."""
    weights: dict[str, float]
    sort_heads: list[tuple[int, int]] = field(default_factory=list)
    sort_rounds: int = 0
    head_weights: list[tuple[int, int, float]] = field(default_factory=list)
    distraction_penalty: float = 0.0
    """Distracting and not relevant goes first: a passage whose relevance without distraction
    is below the query's mean (z < 0) and whose distraction z-score is positive loses
    ``distraction_penalty`` x that z-score (Amiraz et al. 2025: such passages hurt answers)."""
    calibrate_positions: bool = True
    """Whether the Focuser removes ``position_bias`` by default (the tuning's choice)."""
    position_bias: dict[str, list[float]] = field(default_factory=dict)
    slot_strength: list[float] = field(default_factory=list)
    distraction_signal: str = "distraction"
    """What the ``distraction`` weight reads: ``"distraction"`` (DE = 1 - P(abstain)) or
    ``"abstain_logprob"`` (-log P(abstain), the same order without DE's saturation near 1)."""
    data: dict[str, Any] = field(default_factory=dict)
    """What the weights were tuned on (data set and range) and what they scored there."""
    created: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(FUSED_SIGNALS))
        if unknown:
            raise ValueError(f"fusion weights name unknown signals {unknown}; known: {', '.join(FUSED_SIGNALS)}")
        for name, weight in self.weights.items():
            if not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ValueError(f"fusion weight of {name!r} must be a finite number, got {weight!r}")
        if not any(self.weights.values()):
            raise ValueError("a fusion profile needs at least one non-zero weight")
        if not math.isfinite(self.distraction_penalty) or self.distraction_penalty < 0:
            raise ValueError(f"distraction_penalty must be a finite number >= 0, got {self.distraction_penalty!r}")
        if self.distraction_signal not in DISTRACTION_SIGNALS:
            raise ValueError(f"distraction_signal must be one of {DISTRACTION_SIGNALS}, got {self.distraction_signal!r}")
        if self.uses("learned_heads") and not self.head_weights:
            raise ValueError("the fusion profile weights learned_heads but has no head_weights")
        for name, bins in self.position_bias.items():
            if len(bins) < 2:
                raise ValueError(f"position_bias[{name!r}] needs at least 2 bins, got {len(bins)}")

    @property
    def sort_head_set(self) -> HeadSet:
        return head_set(self.sort_heads)

    @property
    def weighted_head_set(self) -> HeadSet:
        return head_set([(layer, head) for layer, head, _ in self.head_weights])

    def uses(self, signal: str) -> bool:
        return bool(self.weights.get(signal))

    def check_model(self, loaded: LoadedModel) -> None:
        if self.model is not None:
            check_identity(self.model, ModelIdentity.of(loaded), what="the fusion profile")

    def to_dict(self) -> dict[str, Any]:
        payload = {"format": FUSION_FORMAT, **asdict(self)}
        payload["sort_heads"] = [list(pair) for pair in self.sort_heads]
        payload["head_weights"] = [list(triple) for triple in self.head_weights]
        return payload

    def save(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return target

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> FusionProfile:
        if payload.get("format") != FUSION_FORMAT:
            raise ValueError(f"not a fusion profile: format is {payload.get('format')!r}, expected {FUSION_FORMAT!r}")
        model = payload.get("model")
        return cls(
            model=ModelIdentity(**model) if model else None,
            weights={str(k): float(v) for k, v in payload["weights"].items()},
            sort_heads=[(int(layer), int(head)) for layer, head in payload.get("sort_heads", [])],
            sort_rounds=int(payload.get("sort_rounds", 0)),
            head_weights=[(int(layer), int(head), float(weight)) for layer, head, weight in payload.get("head_weights", [])],
            distraction_penalty=float(payload.get("distraction_penalty", 0.0)),
            calibrate_positions=bool(payload.get("calibrate_positions", True)),
            position_bias={str(k): [float(x) for x in v] for k, v in payload.get("position_bias", {}).items()},
            slot_strength=[float(x) for x in payload.get("slot_strength", [])],
            distraction_signal=str(payload.get("distraction_signal", "distraction")),
            data=dict(payload.get("data", {})),
            created=str(payload.get("created", "")),
            notes=str(payload.get("notes", "")),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FusionProfile:
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not JSON: {error}") from error
        return cls.from_dict(payload)


HEADS_ONLY = FusionProfile(model=None, weights={"retrieval_heads": 1.0}, notes="retrieval heads alone")
"""The fallback for models without a bundled fusion profile."""


def bundled_fusion(name: str) -> FusionProfile:
    resource = resources.files("ragfocus") / "profiles" / name
    if not resource.is_file():
        raise FileNotFoundError(f"no bundled fusion profile {name!r}")
    return FusionProfile.from_dict(json.loads(resource.read_text(encoding="utf-8")))


def choose_fusion(loaded: LoadedModel, fusion: FusionArgument) -> FusionProfile:
    """``None``: the bundled profile of ``loaded`` (else retrieval heads alone, logged);
    ``"heads"``: retrieval heads alone; a ``FusionProfile`` or a path: that one, checked
    against the model."""
    if isinstance(fusion, FusionProfile):
        fusion.check_model(loaded)
        return fusion
    if fusion == "heads":
        return HEADS_ONLY
    if fusion is None:
        name = DEFAULT_FUSIONS.get(loaded.name)
        if name is None:
            logger.info("no fusion profile for %s: ranking by retrieval heads alone", loaded.name)
            return HEADS_ONLY
        profile = bundled_fusion(name)
        try:
            profile.check_model(loaded)
        except ProfileMismatchError as error:
            logger.warning("bundled fusion profile not used: %s", error)
            return HEADS_ONLY
        return profile
    if isinstance(fusion, (str, os.PathLike)):
        path = Path(fusion)
        if not path.is_file():
            raise FileNotFoundError(f"fusion={fusion!r}: no such file (or pass 'heads', a FusionProfile or None)")
        profile = FusionProfile.load(path)
        profile.check_model(loaded)
        return profile
    raise TypeError(f"fusion must be None, 'heads', a FusionProfile or a path, got {type(fusion).__name__}")


def zscores(values: Sequence[float]) -> list[float]:
    """Standard scores over one query's passages; all zeros when the values do not vary."""
    count = len(values)
    if count == 0:
        return []
    mean = sum(values) / count
    spread = math.sqrt(sum((value - mean) ** 2 for value in values) / count)
    if not math.isfinite(spread) or spread <= 1e-12 * max(1.0, abs(mean)):
        return [0.0] * count
    return [(value - mean) / spread for value in values]


def interpolate(bins: Sequence[float], position: int, count: int) -> float:
    """``bins`` (first to last relative position) read at ``position`` of ``count``."""
    if len(bins) == 1:
        return float(bins[0])
    if count <= 1:
        return 0.0
    spot = position / (count - 1) * (len(bins) - 1)
    low = min(math.floor(spot), len(bins) - 2)
    share = spot - low
    return float(bins[low] * (1 - share) + bins[low + 1] * share)


def fuse(
    table: SignalTable | Sequence[Mapping[str, float]],
    profile: FusionProfile,
    *,
    positional: bool = True,
    slots: Sequence[tuple[int, int]] | None = None,
) -> list[float]:
    """One relevance per passage from ``table`` (``SignalTable``, or per passage in prompt
    order a mapping signal -> value).

    ``slots`` gives each passage's (position, passages) in the prompt it was scored in, for
    the positional correction when they come from several windows; by default the passages are
    one prompt in order.

    Each weighted signal present for every passage is z-scored over the passages, its
    positional bias removed (``positional=True``), weighted and summed; then passages that are
    distracting (distraction z > 0) and not relevant (the sum without distraction < 0) lose
    ``distraction_penalty`` x their distraction z-score. A profile weighting a single signal
    (``HEADS_ONLY``) passes it through on its own scale: with ``fusion="heads"`` a score of 0
    means as much attention as the content-free query gives.
    """
    if not isinstance(table, SignalTable):
        table = SignalTable.from_rows(table, partial=False)
    count = table.size
    active = [name for name, weight in profile.weights.items() if weight]
    if len(active) == 1 and active[0] != DISTRACTION and not (positional and profile.position_bias.get(active[0])):
        values = _fused_values(table, active[0], profile)
        if values is not None and all(math.isfinite(value) for value in values):  # one signal: its own scale
            return [profile.weights[active[0]] * value for value in values]
    fused = [0.0] * count
    distraction: list[float] | None = None
    for name, weight in profile.weights.items():
        values = _fused_values(table, name, profile)
        if values is None:
            continue
        if not all(math.isfinite(value) for value in values):
            _warn_not_finite(values, name, profile)
            continue
        standard = zscores(values)
        bias = profile.position_bias.get(name) if positional else None
        if bias and (count > 1 or slots is not None):
            where = slots if slots is not None else [(position, count) for position in range(count)]
            standard = [value - interpolate(bias, *where[row]) for row, value in enumerate(standard)]
        if name == DISTRACTION:
            distraction = standard
            continue
        for position in range(count):
            fused[position] += weight * standard[position]
    if distraction is not None:
        weight = profile.weights.get(DISTRACTION, 0.0)
        for position in range(count):
            value = distraction[position]
            penalty = profile.distraction_penalty * value if fused[position] < 0 and value > 0 else 0.0
            fused[position] += weight * value - penalty
    return fused


def _warn_not_finite(values: Sequence[float], name: str, profile: FusionProfile) -> None:
    """A signal that is absent (no retriever scores, distraction off) drops out quietly; one
    that was computed and came out NaN or infinite (a model overflowing in float16, say) is
    left out of the fusion too, but loudly."""
    key = ABSTAIN_LOGPROB if name == DISTRACTION and profile.distraction_signal == ABSTAIN_LOGPROB else name
    broken = sum(1 for value in values if not math.isfinite(value))
    logger.warning(
        "the %r signal is NaN or infinite for %d of %d passages and is left out of this query's fusion; "
        "if the model runs in float16, its activations may overflow (load it in bfloat16 or float32)",
        key, broken, len(values),
    )


def _fused_values(table: SignalTable, name: str, profile: FusionProfile) -> list[float] | None:
    """The column a weight reads (``None`` when absent): -log P(abstain) for distraction read
    as ``abstain_logprob``."""
    if name == DISTRACTION and profile.distraction_signal == ABSTAIN_LOGPROB:
        column = table.get(ABSTAIN_LOGPROB)
        return None if column is None else [-value for value in column]
    return table.get(name)


def slot_order(strength: Sequence[float], count: int) -> list[int]:
    """Context slots 0..count-1 from the most attended to the least, by ``strength`` bins."""
    if count <= 1 or not strength:
        return list(range(count))
    values = [interpolate(strength, slot, count) for slot in range(count)]
    return sorted(range(count), key=lambda slot: (-values[slot], -slot))
