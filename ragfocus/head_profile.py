"""Head profiles: which attention heads of a model do the retrieving, as data.

A profile records the model it was made for (name, SHA-256 of its weight file, shape), the
detection method (``niah``: Wu et al., "Retrieval Head Mechanistically Explains Long-Context
Factuality", ICLR 2025; ``qr``: Wu et al., "Query-Focused Retrieval Heads Improve
Long-Context Reasoning and Re-ranking", EMNLP 2025), the data and parameters of the run, the
score of every layer-head, and the heads selected. Profiles for bundled models ship inside
the package (``ragfocus/profiles/*.json``); ``ragfocus heads detect`` writes one for any
other model. Loading a profile for a model checks that it was made for that model.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ragfocus.engine import HeadSet
from ragfocus.models import LoadedModel
from ragfocus.scoring.heads import head_set

logger = logging.getLogger(__name__)

PROFILE_FORMAT = "ragfocus-head-profile/1"
METHODS = ("niah", "qr")


class ProfileMismatchError(ValueError):
    """A head profile was made for another model than the one it is used with."""


@dataclass(frozen=True)
class ModelIdentity:
    """What a profile was made for: name, weight-file hash (``None`` when unknown), shape."""

    name: str
    weights_sha256: str | None
    num_layers: int
    num_heads: int

    @classmethod
    def of(cls, loaded: LoadedModel) -> ModelIdentity:
        return cls(loaded.name, loaded.weights_sha256, loaded.num_layers, loaded.num_heads)


@dataclass(frozen=True)
class HeadProfile:
    """Scores of every (layer, head) of one model under one detection method, and a selection."""

    model: ModelIdentity
    method: str
    data: dict[str, Any]
    """What the scores were measured on (data set and its range, or the haystack settings)."""
    parameters: dict[str, Any]
    created: str
    """ISO date of the detection run."""
    scores: list[list[float]]
    """``scores[layer][head]``, counted from 0."""
    selected: list[tuple[int, int]]
    """The heads to read, best first."""
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown detection method {self.method!r}: expected one of {', '.join(METHODS)}")
        if len(self.scores) != self.model.num_layers or any(len(row) != self.model.num_heads for row in self.scores):
            raise ValueError(
                f"scores must be {self.model.num_layers} layers x {self.model.num_heads} heads for {self.model.name}"
            )
        if not self.selected:
            raise ValueError("a profile must select at least one head")
        for layer, head in self.selected:
            if not (0 <= layer < self.model.num_layers and 0 <= head < self.model.num_heads):
                raise ValueError(f"selected head ({layer}, {head}) is outside the model's {self.model.num_layers}x{self.model.num_heads}")

    @property
    def heads(self) -> HeadSet:
        """The selected heads as ``{layer: (head, ...)}``, ready for ``Focuser(heads=...)``."""
        return head_set(self.selected)

    def ranked(self) -> list[tuple[int, int]]:
        """Every (layer, head), best score first (ties: lower layer, then lower head)."""
        return rank_heads(self.scores)

    def top(self, k: int) -> HeadSet:
        """The ``k`` best-scoring heads."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        return head_set(self.ranked()[:k])

    def check_model(self, loaded: LoadedModel) -> None:
        """Raise ``ProfileMismatchError`` unless this profile was made for ``loaded``."""
        check_identity(self.model, ModelIdentity.of(loaded), what=f"this {self.method} head profile")

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["selected"] = [list(pair) for pair in self.selected]
        return {"format": PROFILE_FORMAT, **payload}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the profile as JSON (atomically: a temporary file renamed into place)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, target)
        return target

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> HeadProfile:
        if payload.get("format") != PROFILE_FORMAT:
            raise ValueError(f"not a ragfocus head profile (format {payload.get('format')!r}, expected {PROFILE_FORMAT!r})")
        try:
            return cls(
                model=ModelIdentity(**payload["model"]),
                method=payload["method"],
                data=dict(payload["data"]),
                parameters=dict(payload["parameters"]),
                created=str(payload["created"]),
                scores=[[float(value) for value in row] for row in payload["scores"]],
                selected=[(int(layer), int(head)) for layer, head in payload["selected"]],
                notes=dict(payload.get("notes", {})),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"malformed head profile: {error!r}") from error

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HeadProfile:
        """Read a profile written by ``save`` (no model check: see ``load_profile``)."""
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        return cls.from_dict(payload)


def rank_heads(scores: list[list[float]]) -> list[tuple[int, int]]:
    """Every (layer, head) of ``scores[layer][head]``, best first (ties: lower layer, then head)."""
    pairs = [(layer, head) for layer in range(len(scores)) for head in range(len(scores[layer]))]
    return sorted(pairs, key=lambda pair: (-scores[pair[0]][pair[1]], pair))


def check_identity(expected: ModelIdentity, actual: ModelIdentity, *, what: str) -> None:
    """Refuse a profile whose model differs from ``actual``; warn when it cannot be verified."""
    if (expected.num_layers, expected.num_heads) != (actual.num_layers, actual.num_heads):
        raise ProfileMismatchError(
            f"{what} was made for {expected.name} ({expected.num_layers} layers x {expected.num_heads} heads) "
            f"but the model is {actual.name} ({actual.num_layers} x {actual.num_heads}); detect heads for this "
            "model with `ragfocus heads detect` or pass heads=... explicitly"
        )
    if expected.weights_sha256 and actual.weights_sha256:
        if expected.weights_sha256 != actual.weights_sha256:
            raise ProfileMismatchError(
                f"{what} was made for {expected.name} with weights sha256 {expected.weights_sha256[:16]}… but the "
                f"model {actual.name} has weights sha256 {actual.weights_sha256[:16]}…; detect heads for this model "
                "with `ragfocus heads detect`"
            )
        return
    if expected.name != actual.name:
        raise ProfileMismatchError(
            f"{what} was made for {expected.name!r}, not {actual.name!r}; detect heads for this model with "
            "`ragfocus heads detect`"
        )
    logger.warning("%s names the model %s but its weights cannot be verified by hash", what, actual.name)


def load_profile(path: str | os.PathLike[str], loaded: LoadedModel) -> HeadProfile:
    """Read a profile and check that it belongs to ``loaded``.

    Raises:
        ProfileMismatchError: the profile was made for another model.
        ValueError: the file is not a head profile.
    """
    profile = HeadProfile.load(path)
    profile.check_model(loaded)
    return profile


def bundled_profile_names() -> list[str]:
    """File names of the profiles shipped inside the package."""
    folder = resources.files("ragfocus") / "profiles"
    return sorted(
        entry.name for entry in folder.iterdir() if entry.name.endswith(".json") and not entry.name.endswith(".fusion.json")
    )


def bundled_profile(name: str) -> HeadProfile:
    """A profile shipped inside the package, by file name (``bundled_profile_names()``)."""
    resource = resources.files("ragfocus") / "profiles" / name
    if not resource.is_file():
        raise FileNotFoundError(f"no bundled head profile {name!r}; bundled: {', '.join(bundled_profile_names()) or 'none'}")
    return HeadProfile.from_dict(json.loads(resource.read_text(encoding="utf-8")))


DEFAULT_PROFILES = {"smollm2-135m-instruct": "smollm2-135m-instruct.qr.json"}
"""Model name -> the bundled profile ``Focuser`` reads by default."""


def default_profile_for(loaded: LoadedModel) -> HeadProfile | None:
    """The bundled default profile for ``loaded``, or ``None`` when none matches it."""
    name = DEFAULT_PROFILES.get(loaded.name)
    if name is None:
        return None
    profile = bundled_profile(name)
    try:
        profile.check_model(loaded)
    except ProfileMismatchError as error:
        logger.warning("bundled head profile not used: %s", error)
        return None
    return profile
