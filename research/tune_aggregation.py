"""Development-split sweep behind ragfocus' scoring defaults (aggregate, sink_factor).

Captures the middle-layer heads' query and N/A attention once per question, then scores
every variant from the same tensors: ICR's sum over passage tokens against the mean per
token, with and without calibration, for several sink factors. HotpotQA dev only
(0-2999); the defaults were chosen on questions 0-239.

    .venv/bin/python research/tune_aggregation.py --start 0 --limit 240
"""

from __future__ import annotations

import argparse

from tqdm import tqdm

from ragfocus import load_model
from ragfocus.engine import AttentionEngine
from ragfocus.evaluation.datasets import DEVELOPMENT, hotpotqa
from ragfocus.evaluation.hotpotqa_eval import ranking_of, recall_at
from ragfocus.prompt import build_prompt
from ragfocus.scoring import middle_layer_heads
from ragfocus.scoring.retrieval_heads import passage_scores

SINK_FACTORS: tuple[float | None, ...] = (None, 5.0, 10.0, 20.0, 50.0, 100.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--limit", type=int, default=240)
    args = parser.parse_args()
    if args.start + args.limit > DEVELOPMENT.stop:
        raise SystemExit("tune on the development split (0-2999) only")
    loaded = load_model()
    engine = AttentionEngine(loaded.model)
    heads = middle_layer_heads(loaded.num_layers, loaded.num_heads)
    variants = [(f, c, m) for f in SINK_FACTORS for c in (True, False) for m in (True, False)]
    recalls: dict[tuple, list[float]] = {v: [] for v in variants}
    for question in tqdm(hotpotqa(args.start, args.limit), unit="q"):
        prompt = build_prompt(loaded.tokenizer, question.question, question.paragraphs)
        query_rows, null_rows = engine.suffix_attention(
            prompt.prefix_ids, [prompt.query_ids, prompt.null_ids], rows=[prompt.query_rows, prompt.null_rows], heads=heads
        )
        query, null = query_rows.mean(1).sum(0), null_rows.mean(1).sum(0)
        for factor, calibrated, mean in variants:
            scored = passage_scores(query, null, prompt.passage_spans, sink_factor=factor, aggregate="mean" if mean else "sum")
            scores = scored.calibrated if calibrated else scored.query_mass
            recalls[(factor, calibrated, mean)].append(recall_at(ranking_of(scores), question.gold, 2))
    print(f"HotpotQA dev {args.start}-{args.start + args.limit - 1}, middle-layer heads, recall@2")
    print("| sink_factor | calibrated sum (ICR) | calibrated mean | raw sum | raw mean |")
    print("| --- | --- | --- | --- | --- |")
    for factor in SINK_FACTORS:
        cells = [sum(recalls[(factor, c, m)]) / args.limit for c, m in ((True, False), (True, True), (False, False), (False, True))]
        print(f"| {factor} | " + " | ".join(f"{cell:.3f}" for cell in cells) + " |")


if __name__ == "__main__":
    main()
