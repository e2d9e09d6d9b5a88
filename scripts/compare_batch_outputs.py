"""Compare two ``ragfocus batch`` JSONL outputs row for row, timings aside (docs/batch.md).

    python scripts/compare_batch_outputs.py uninterrupted.jsonl resumed.jsonl

Prints rows, duplicate ids, missing and extra ids, and rows that differ; exits 1 on any
difference.
"""

from __future__ import annotations

import json
import sys
from collections import Counter


def rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def main(first: str, second: str) -> int:
    a, b = rows(first), rows(second)
    ids_a, ids_b = [row["id"] for row in a], [row["id"] for row in b]
    duplicates = sum(count - 1 for count in Counter(ids_b).values() if count > 1)
    by_id = {row["id"]: {k: v for k, v in row.items() if k != "timings"} for row in a}
    differing = sum(1 for row in b if by_id.get(row["id"]) != {k: v for k, v in row.items() if k != "timings"})
    report = {
        "rows": [len(a), len(b)],
        "duplicates_in_second": duplicates,
        "missing_from_second": len(set(ids_a) - set(ids_b)),
        "extra_in_second": len(set(ids_b) - set(ids_a)),
        "differing_rows": differing,
        "same_order": ids_a == ids_b,
    }
    print(json.dumps(report))
    return 0 if report["rows"][0] == report["rows"][1] and not (duplicates or differing or report["missing_from_second"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
