"""Dump every head's calibrated passage scores on HotpotQA development questions.

The training data of learned head weights (``research/fit_head_weights.py``): per question,
a (heads, paragraphs) array of each head's own calibrated score (``per_head_calibrated``),
the gold paragraphs, and the question index. Development questions 0-2999 only.

    python research/dump_head_features.py --start 0 --limit 1000 --output work/features_0.npz
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ragfocus.engine import AttentionEngine
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.models import load_model
from ragfocus.prompt import build_prompt
from ragfocus.scoring.heads import all_heads
from ragfocus.scoring.retrieval_heads import capture_head_attention, per_head_calibrated

DEVELOPMENT_END = 3000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=int, required=True)
    parser.add_argument("--limit", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    if args.start + args.limit > DEVELOPMENT_END:
        raise SystemExit("head features are dumped on development questions 0-2999 only")
    loaded = load_model(None, device=args.device)
    engine = AttentionEngine(loaded.model)
    heads = all_heads(loaded.num_layers, loaded.num_heads)
    indices, golds, features = [], [], []
    order = None
    began = time.perf_counter()
    for question in tqdm(hotpotqa(args.start, args.limit), desc="features", unit="q", mininterval=10):
        if len(question.paragraphs) != 10:
            continue
        prompt = build_prompt(loaded.tokenizer, question.question, question.paragraphs)
        attention = capture_head_attention(engine, prompt, heads)
        order, scores = per_head_calibrated(attention, heads, prompt.passage_spans)
        indices.append(question.index)
        golds.append(sorted(question.gold))
        features.append(scores.numpy().astype(np.float32))
    np.savez_compressed(
        args.output, index=np.array(indices), gold=np.array(golds), features=np.stack(features),
        heads=np.array(order), model=loaded.name,
    )
    print(f"{len(indices)} questions in {time.perf_counter() - began:.0f} s -> {args.output}")


if __name__ == "__main__":
    main()
