"""Choose the heads attention sorting reads (HotpotQA development questions only).

Step 1 (``dump``): for each question, every head's attention from the last position of the
attention-sort suffix ("Answer the question using the paragraphs above. Question: q Answer:")
over each paragraph (mean per token), one decoding step over the ranking prompt's cache.
Step 2 (``choose``): rank heads of layers <= 23 by their own recall@2 on the first questions,
keep the top 8, and report their summed attention's recall@2 on the rest.

    python research/choose_sort_heads.py dump 2000 100 work/sort_heads.json
    python research/choose_sort_heads.py choose work/sort_heads.json --pick 50

The shipped sort heads came from this on dev 2000-2099 (pick 2000-2049, check 2050-2099):
(21,8) (21,1) (23,5) (17,2) (23,2) (23,1) (19,5) (21,5), check recall@2 0.37.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

DEVELOPMENT_END = 3000
MAX_LAYER = 23


def dump(start: int, limit: int, output: Path) -> None:
    from ragfocus import Focuser
    from ragfocus.evaluation.datasets import hotpotqa
    from ragfocus.prompt import build_prompt
    from ragfocus.scoring.heads import all_heads

    if start + limit > DEVELOPMENT_END:
        raise SystemExit("development questions 0-2999 only")
    focuser = Focuser(fusion="heads")
    heads = all_heads(focuser.loaded.num_layers, focuser.loaded.num_heads)
    records = []
    for question in hotpotqa(start, limit):
        prompt = build_prompt(focuser.loaded.tokenizer, question.question, question.paragraphs)
        (captured,) = focuser.engine.suffix_attention(prompt.prefix_ids, [prompt.sort_ids], rows=[prompt.sort_rows], heads=heads)
        last = captured[:, -1]
        per_passage = torch.stack([last[:, s:e].mean(dim=1) for s, e in prompt.passage_spans], dim=1)
        records.append({"gold": sorted(question.gold), "raw": per_passage.tolist()})
    output.write_text(json.dumps(records))


def recall_at_2(scores: torch.Tensor, gold: list[int]) -> float:
    top = torch.argsort(scores, descending=True, stable=True)[:2].tolist()
    return len(set(top) & set(gold)) / 2


def choose(path: Path, pick: int, heads_per_layer: int = 9, keep: int = 8) -> None:
    records = json.loads(path.read_text())
    first, rest = records[:pick], records[pick:]
    count = len(first[0]["raw"])
    own = [
        sum(recall_at_2(torch.tensor(r["raw"][h]), r["gold"]) for r in first) / len(first)
        for h in range(count)
    ]
    eligible = [h for h in range(count) if h // heads_per_layer <= MAX_LAYER]
    chosen = sorted(eligible, key=lambda h: -own[h])[:keep]
    check = sum(recall_at_2(torch.tensor(r["raw"])[chosen].sum(dim=0), r["gold"]) for r in rest) / max(len(rest), 1)
    print("heads:", [(h // heads_per_layer, h % heads_per_layer) for h in chosen], f"check recall@2 {check:.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "dump":
        dump(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
    else:
        choose(Path(sys.argv[2]), int(sys.argv[sys.argv.index("--pick") + 1]) if "--pick" in sys.argv else 50)
