"""Choose the window size and the final round for rankings past one window (issue 8).

Tuning pool: HotpotQA dev 2500-2519 (20 questions, 200 paragraphs pooled); the report pool
(``ragfocus eval pooled``, dev 2000-2019) is not looked at here. Prints, per setting, the
share of questions whose two gold paragraphs are in the top 10, and the time per query.

    python research/tune_windows.py --device cuda
"""

from __future__ import annotations

import argparse
import json

from ragfocus import Focuser, load_model
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.evaluation.pooled_eval import evaluate_pooled

SETTINGS = [(8192, 0), (8192, 20), (8192, 40), (2048, 0), (2048, 20)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default=None)
    parser.add_argument("--start", type=int, default=2500)
    parser.add_argument("--questions", type=int, default=20)
    args = parser.parse_args()
    loaded = load_model(device=args.device)
    questions = hotpotqa(args.start, args.questions)
    for window, final in SETTINGS:
        focuser = Focuser(loaded, window_tokens=window, final_round=final)
        report = evaluate_pooled(focuser, questions, minilm=False, progress=False)
        print(json.dumps({"window_tokens": focuser.window_tokens, "final_round": final, "hits": report.hits,
                          "windows": report.windows, "seconds_per_query": round(report.seconds_per_query, 3)}))


if __name__ == "__main__":
    main()
