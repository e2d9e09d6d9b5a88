"""Which heads a ``Focuser`` reads: a profile, an explicit set, ``"auto"``, or the fallback.

Order of precedence for ``heads``:

- a ``{layer: heads}`` mapping: read exactly those;
- a ``HeadProfile`` or the path of a profile JSON: its selected heads, after checking it was
  made for this model (``ProfileMismatchError`` otherwise);
- ``"auto"``: the bundled profile when there is one, else a profile detected on the fly with
  the ``qr`` method on ``AUTO_QUESTIONS`` HotpotQA development questions and cached under
  the ragfocus cache directory (``RAGFOCUS_CACHE_DIR``), so it is detected once per model;
- ``None``: the bundled profile for the model; for a model without one, every head of the
  middle half of the layers, with a warning (DESIGN.md measures that set at recall@2 0.52
  on HotpotQA against 0.45 for all heads with SmolLM2-135M).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ragfocus.engine import HeadSet
from ragfocus.head_profile import HeadProfile, default_profile_for, load_profile
from ragfocus.models import LoadedModel, cache_root
from ragfocus.scoring.heads import middle_layer_heads

logger = logging.getLogger(__name__)

AUTO_QUESTIONS = 64
"""HotpotQA development questions read by ``heads="auto"`` (about 4 minutes for a 135M model
on two CPU cores; it runs once per model and is cached)."""

HeadsArgument = HeadSet | HeadProfile | str | os.PathLike[str] | None


@dataclass(frozen=True)
class HeadChoice:
    heads: HeadSet
    profile: HeadProfile | None
    source: str
    """Where the heads came from, for logs and reports."""


def choose_heads(loaded: LoadedModel, heads: HeadsArgument) -> HeadChoice:
    """Resolve the ``heads`` argument of ``Focuser`` for ``loaded`` (see the module doc)."""
    if isinstance(heads, HeadProfile):
        heads.check_model(loaded)
        return HeadChoice(heads.heads, heads, f"{heads.method} head profile ({len(heads.selected)} heads)")
    if isinstance(heads, Mapping):
        return HeadChoice(dict(heads), None, "heads given by the caller")
    if heads is None or heads == "auto":
        bundled = default_profile_for(loaded)
        if bundled is not None:
            return HeadChoice(bundled.heads, bundled, f"bundled {bundled.method} head profile ({len(bundled.selected)} heads)")
        if heads == "auto":
            profile = auto_profile(loaded)
            return HeadChoice(profile.heads, profile, f"auto-detected {profile.method} head profile ({len(profile.selected)} heads)")
        fallback = middle_layer_heads(loaded.num_layers, loaded.num_heads)
        layers = sorted(fallback)
        logger.warning(
            "no head profile for %s: reading every head of layers %d-%d (the documented fallback); "
            "pass heads='auto' or run `ragfocus heads detect` for better ranking",
            loaded.name, layers[0], layers[-1],
        )
        return HeadChoice(fallback, None, f"fallback: all heads of layers {layers[0]}-{layers[-1]}")
    if isinstance(heads, (str, os.PathLike)):
        profile = load_profile(heads, loaded)
        return HeadChoice(profile.heads, profile, f"{profile.method} head profile {os.fspath(heads)}")
    raise TypeError(
        f"heads must be a {{layer: heads}} mapping, a HeadProfile, a profile path, 'auto' or None; got {type(heads).__name__}"
    )


def auto_profile(loaded: LoadedModel, *, questions: int | None = None) -> HeadProfile:
    """The cached on-the-fly ``qr`` profile for ``loaded``, detected now (on ``questions``
    development questions, default ``AUTO_QUESTIONS``) if not cached."""
    questions = AUTO_QUESTIONS if questions is None else questions
    from filelock import FileLock

    from ragfocus.detection import detect_heads

    path = auto_profile_path(loaded)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return load_profile(path, loaded)
        logger.warning("detecting retrieval heads for %s on %d HotpotQA development questions (once; cached at %s)",
                       loaded.name, questions, path)
        profile = detect_heads(loaded, "qr", start=0, limit=questions, work_file=path.with_suffix(".work.jsonl"))
        profile.save(path)
        return profile


def auto_profile_path(loaded: LoadedModel) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", loaded.name).strip("_")[-80:] or "model"
    fingerprint = (loaded.weights_sha256 or "unhashed")[:16]
    return cache_root() / "profiles" / f"{slug}-{fingerprint}.qr.json"
