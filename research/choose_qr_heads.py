"""Choose the qr criterion and the number of heads for the bundled profile (development only).

Reads a ``qr`` detection work file (per question, every head's calibrated passage scores on
HotpotQA development questions), selects heads on the first part of the questions with each
criterion, and measures recall@2 of the top-k heads on the remaining questions. A head set's
passage score is approximated here as the sum of its heads' own passage scores (the Focuser
masks sinks once over the summed attention, so its numbers differ slightly); the choice is
then confirmed with ``ragfocus eval hotpotqa`` on other development questions.

    .venv/bin/python research/choose_qr_heads.py work/heads/qr.jsonl --select 200
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ragfocus.detection.qr import CRITERIA, head_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_file")
    parser.add_argument("--select", type=int, default=200, help="questions used to select heads; the rest measure")
    parser.add_argument("--ks", default="1,2,3,4,6,8,12,16,24,32")
    args = parser.parse_args()
    lines = Path(args.work_file).read_text(encoding="utf-8").splitlines()
    settings = json.loads(lines[0])["settings"]
    records = sorted((json.loads(line) for line in lines[1:]), key=lambda r: int(r["key"]))
    layers, heads = settings["model"]["num_layers"], settings["model"]["num_heads"]
    chosen, held = records[: args.select], records[args.select :]
    print(f"select on {len(chosen)} questions ({chosen[0]['key']}-{chosen[-1]['key']}), "
          f"measure on {len(held)} ({held[0]['key']}-{held[-1]['key']})")
    ks = [int(k) for k in args.ks.split(",")]
    print("criterion | " + " | ".join(f"k={k}" for k in ks) + " | all heads")
    for criterion in CRITERIA:
        scores = torch.tensor(head_scores(chosen, layers, heads, criterion)).flatten()
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        cells = [_recall(held, order[:k]) for k in ks]
        print(f"{criterion} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {_recall(held, order):.3f}")


def _recall(records: list[dict], rows: list[int]) -> float:
    total = 0.0
    for record in records:
        combined = torch.tensor(record["scores"], dtype=torch.float64)[rows].sum(dim=0)
        top = sorted(range(len(combined)), key=lambda i: (-float(combined[i]), i))[:2]
        gold = set(record["gold"])
        total += len(gold & set(top)) / len(gold)
    return total / len(records)


if __name__ == "__main__":
    main()
