"""Smoke test on the lent GPU machine, after `source /root/stage/env.sh`: python3 scripts/gpu/smoke.py"""

import time

import torch
import transformers

from ragfocus import Focuser
from ragfocus.evaluation.baselines import bm25_scores, minilm_scores
from ragfocus.evaluation.datasets import hotpotqa

print(f"torch {torch.__version__} cuda {torch.cuda.is_available()} transformers {transformers.__version__}")
start = time.perf_counter()
focuser = Focuser(device="cuda")
print(f"Focuser loaded in {time.perf_counter() - start:.1f} s")
question = hotpotqa(2000, 1)[0]
start = time.perf_counter()
ranked = focuser.rank(question.question, question.paragraphs)
print(f"rank in {time.perf_counter() - start:.2f} s:", [p.index for p in ranked], "gold", sorted(question.gold))
print("minilm", minilm_scores("a", ["b"]), "bm25", bm25_scores("a b", ["a", "c"]))
