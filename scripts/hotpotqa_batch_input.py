"""Write HotpotQA dev-distractor questions as ``ragfocus batch`` input rows (docs/batch.md).

    python scripts/hotpotqa_batch_input.py --start 0 --limit 100 hotpot100.jsonl

Each row: ``{"id": "hotpotqa-dev-N", "query", "passages": [10 x {"id": title, "text":
"title: paragraph", "metadata": {"gold": bool}}], "metadata": {"answer": ...}}``. Development
split (0-2999) only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ragfocus.evaluation.datasets import DEVELOPMENT, hotpotqa


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()
    if args.start + args.limit > DEVELOPMENT.stop:
        raise SystemExit("batch inputs come from the development split, questions 0-2999")
    with args.output.open("w", encoding="utf-8") as handle:
        for question in hotpotqa(args.start, args.limit):
            passages = [
                {"id": title, "text": text, "metadata": {"gold": position in question.gold}}
                for position, (title, text) in enumerate(zip(question.titles, question.paragraphs))
            ]
            row = {"id": f"hotpotqa-dev-{question.index}", "query": question.question, "passages": passages,
                   "metadata": {"answer": question.answer}}
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
