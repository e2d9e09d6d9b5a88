"""Layer x head heat maps of head profiles, and where two methods agree."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragfocus.head_profile import HeadProfile


@dataclass(frozen=True)
class Agreement:
    k: int
    shared: list[tuple[int, int]]
    """Heads in the top ``k`` of both profiles."""
    spearman: float
    """Rank correlation of the two profiles' scores over every head."""


def agreement(first: HeadProfile, second: HeadProfile, k: int) -> Agreement:
    """Which heads two profiles of the same model both rank in their top ``k``."""
    if first.model != second.model:
        raise ValueError(f"the profiles are for different models ({first.model.name} and {second.model.name})")
    top_first, top_second = first.ranked()[:k], set(second.ranked()[:k])
    shared = [pair for pair in top_first if pair in top_second]
    return Agreement(k, shared, _spearman(np.asarray(first.scores).ravel(), np.asarray(second.scores).ravel()))


def plot_profiles(profiles: Sequence[HeadProfile], output: str | os.PathLike[str], *, k: int = 8) -> Path:
    """Save one heat map per profile side by side (PNG); the top ``k`` heads of each are
    outlined, and, for two profiles, the heads both select are starred and listed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not profiles:
        raise ValueError("no profiles to plot")
    shared: set[tuple[int, int]] = set()
    caption = ""
    if len(profiles) == 2:
        agreed = agreement(profiles[0], profiles[1], k)
        shared = set(agreed.shared)
        listed = ", ".join(f"{layer}/{head}" for layer, head in agreed.shared) or "none"
        caption = (f"top-{k} heads both methods select (layer/head): {listed};  "
                   f"Spearman correlation of all scores: {agreed.spearman:.2f}")
    model = profiles[0].model
    figure, axes = plt.subplots(1, len(profiles), figsize=(4.2 * len(profiles), 7.5), squeeze=False)
    for axis, profile in zip(axes[0], profiles):
        scores = np.asarray(profile.scores)
        image = axis.imshow(scores, aspect="auto", cmap="viridis", origin="lower")
        for layer, head in profile.ranked()[:k]:
            axis.add_patch(plt.Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.6))
            if (layer, head) in shared:
                axis.text(head, layer, "★", ha="center", va="center", color="white", fontsize=9)
        axis.set_title(f"{profile.method}: {_describe(profile)}", fontsize=9)
        axis.set_xlabel("head")
        axis.set_ylabel("layer")
        axis.set_xticks(range(model.num_heads))
        figure.colorbar(image, ax=axis, fraction=0.05)
    figure.suptitle(f"Retrieval-head scores, {model.name} (red: top {k}; ★: selected by both)", fontsize=11)
    if caption:
        figure.text(0.5, 0.01, caption, ha="center", fontsize=8, wrap=True)
    figure.tight_layout(rect=(0, 0.04, 1, 0.96))
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return target


def _describe(profile: HeadProfile) -> str:
    data = profile.data
    if profile.method == "qr":
        return f"HotpotQA dev {data['start']}-{data['start'] + data['limit'] - 1}, {profile.parameters.get('criterion')}"
    return f"{len(data['lengths'])} lengths x {len(data['depths'])} depths x {data['needles']} needles"


def _spearman(first: np.ndarray, second: np.ndarray) -> float:
    def ranks(values: np.ndarray) -> np.ndarray:
        order = np.argsort(values, kind="stable")
        result = np.empty(len(values))
        result[order] = np.arange(len(values))
        return result

    a, b = ranks(first), ranks(second)
    return float(np.corrcoef(a, b)[0, 1])
