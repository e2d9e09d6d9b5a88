"""Fit learned head weights (L1 logistic regression) on HotpotQA development questions.

Every head's calibrated passage scores (``research/dump_head_features.py``) are z-scored over
the paragraphs of each question; an L1-penalised logistic regression predicts gold paragraphs
from them; its coefficients become ``head_weights`` of the fusion profile, and the
``learned_heads`` signal of a passage is the weighted sum of its per-head z-scores. A learned
weighting of heads is DESIGN.md's strongest measured direction (ICR reads every head equally;
QRHead selects a few; here the development data weights them). Only heads up to
``--max-layer`` are eligible so the engine still stops early.

Questions in ``--hold`` (default 1000-1499, where the fusion weights are tuned) are left out
of the fit and report the weighting's recall@2.

    python research/fit_head_weights.py work/dumps/features_0.npz work/dumps/features_1.npz \
        --base ragfocus/profiles/smollm2-135m-instruct.fusion.json --output ragfocus/profiles/smollm2-135m-instruct.fusion.json
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from ragfocus.fusion import FusionProfile

DEVELOPMENT_END = 3000


def load_features(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(question indices, gold mask (q, 10), per-question z-scored features (q, heads, 10), heads (h, 2))."""
    parts = [np.load(path) for path in paths]
    index = np.concatenate([part["index"] for part in parts])
    if index.max() >= DEVELOPMENT_END:
        raise SystemExit("head weights are fitted on development questions 0-2999 only")
    features = np.concatenate([part["features"] for part in parts]).astype(np.float64)
    gold = np.zeros((len(index), features.shape[2]), dtype=bool)
    for row, pair in enumerate(np.concatenate([part["gold"] for part in parts])):
        gold[row, pair] = True
    mean = features.mean(axis=2, keepdims=True)
    spread = features.std(axis=2, keepdims=True)
    standard = np.where(spread > 1e-12, (features - mean) / np.where(spread > 1e-12, spread, 1.0), 0.0)
    return index, gold, standard, parts[0]["heads"]


def recall_at_2(scores: np.ndarray, gold: np.ndarray) -> float:
    top = np.argsort(-scores, axis=1, kind="stable")[:, :2]
    return float(np.take_along_axis(gold, top, axis=1).sum(axis=1).mean() / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("features", nargs="+", type=Path)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--max-layer", type=int, default=23)
    parser.add_argument("--c", type=float, default=0.1, help="inverse L1 strength (smaller: fewer heads)")
    parser.add_argument("--hold", default="1000-1499")
    args = parser.parse_args()

    index, gold, standard, heads = load_features(args.features)
    low, high = (int(x) for x in args.hold.split("-"))
    held = (index >= low) & (index <= high)
    eligible = heads[:, 0] <= args.max_layer
    train = standard[~held][:, eligible, :]
    x = train.transpose(0, 2, 1).reshape(-1, int(eligible.sum()))
    y = gold[~held].reshape(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        model = LogisticRegression(penalty="l1", C=args.c, solver="liblinear", max_iter=5000).fit(x, y)
    weights = model.coef_[0]
    chosen = [(int(layer), int(head), float(weight)) for (layer, head), weight in zip(heads[eligible], weights) if weight]
    scores_held = np.einsum("qhp,h->qp", standard[held][:, eligible, :], weights)
    scores_train = np.einsum("qhp,h->qp", train, weights)
    print(f"fit on {int((~held).sum())} questions, {len(chosen)} heads (layers <= {args.max_layer}, C={args.c}): "
          f"recall@2 train {recall_at_2(scores_train, gold[~held]):.3f}, held {args.hold} {recall_at_2(scores_held, gold[held]):.3f}")
    base = FusionProfile.load(args.base)
    data = dict(base.data)
    data["head_weights"] = {
        "fit_on": f"HotpotQA dev {int(index[~held].min())}-"
                  f"{int(index.max())} without {args.hold} ({int((~held).sum())} questions)",
        "recall_at_2_held": round(recall_at_2(scores_held, gold[held]), 4),
        "c": args.c,
        "max_layer": args.max_layer,
        "script": "research/fit_head_weights.py " + " ".join(str(path) for path in args.features),
    }
    replace(base, head_weights=chosen, data=data).save(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
