"""Explore formulations of the distracting effect on SQuAD v2 TUNING articles 0-9 (never 10-34).

Usage: python research/explore_distraction_prompts.py SEED [VARIANTS]  (160 balanced pairs; seed 0 to pick,
seed 1 to confirm). Results (2026-11-24, 2-core CPU) are in docs/benchmarks.md: no variant beats
all-MiniLM-L6-v2 cosine with SmolLM2-135M; the library keeps the teacher-forced abstain answer.
Writes the per-pair log-probabilities to work/de/cache.json.
"""
import json
import os
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
from ragfocus.evaluation.squad_eval import squad_pairs
from ragfocus.models import load_model

seed = int(sys.argv[1]); only = sys.argv[2].split(",") if len(sys.argv) > 2 else None
L = load_model(None); tok = L.tokenizer; model = L.model; model.eval()
pairs = squad_pairs(range(10), 160, seed=seed)
YES = [tok.encode(w, add_special_tokens=False)[0] for w in ("Yes", "yes", " Yes")]
NO = [tok.encode(w, add_special_tokens=False)[0] for w in ("No", "no", " No")]
CAN = "Can the question be answered from the passage? Answer Yes or No."
SYS = ("You are a careful reading assistant. You answer only from the given passage. "
       "If the passage does not contain the answer to the question, you say No.")
FS = [("Passage: The Eiffel Tower was completed in 1889 for the World's Fair in Paris. It is 330 metres tall.\n\nQuestion: When was the Eiffel Tower completed?", "Yes"),
      ("Passage: The Eiffel Tower was completed in 1889 for the World's Fair in Paris. It is 330 metres tall.\n\nQuestion: Who paid for the construction of the Eiffel Tower?", "No")]
V = {  # name -> (system or None, fewshot?, user template)
 "A_can":   (None, False, CAN + "\n\nPassage: {p}\n\nQuestion: {q}"),
 "B_contain_after": (None, False, "Passage: {p}\n\nQuestion: {q}\n\nDoes the passage contain the answer to the question? Answer Yes or No."),
 "C_qfirst": (None, False, "Question: {q}\n\nPassage: {p}\n\n" + CAN),
 "D_sys":   (SYS, False, CAN + "\n\nPassage: {p}\n\nQuestion: {q}"),
 "E_stated": (None, False, "Is the answer to the question explicitly stated in the passage? Answer Yes or No.\n\nPassage: {p}\n\nQuestion: {q}"),
 "F_fewshot": (None, True, CAN + "\n\nPassage: {p}\n\nQuestion: {q}"),
}
IDK_INSTR = 'Answer the question using only the passage. If the passage does not contain the answer, reply with exactly: I don\'t know'
IDK = tok.encode("I don't know", add_special_tokens=False)

def ids_for(name, p, q):
    sysm, fs, tmpl = V[name]
    msgs = []
    if sysm: msgs.append({"role": "system", "content": sysm})
    if fs:
        for u, a in FS:
            msgs += [{"role": "user", "content": CAN + "\n\n" + u}, {"role": "assistant", "content": a}]
    msgs.append({"role": "user", "content": tmpl.format(p=p, q=q)})
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]

@torch.inference_mode()
def yn(ids):
    lg = torch.log_softmax(model(input_ids=torch.tensor([ids]), logits_to_keep=1).logits[0, -1].float(), -1)
    return [float(lg[i]) for i in YES], [float(lg[i]) for i in NO]

@torch.inference_mode()
def idk(p, q):
    text = tok.apply_chat_template([{"role": "user", "content": f"{IDK_INSTR}\n\nPassage: {p}\n\nQuestion: {q}"}], tokenize=False, add_generation_prompt=True)
    pr = tok(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([pr + IDK])
    lg = torch.log_softmax(model(input_ids=ids, logits_to_keep=len(IDK) + 1).logits[0, :-1].float(), -1)
    lp = lg.gather(-1, torch.tensor(IDK)[:, None])[:, 0]
    return [float(x) for x in lp]

cache_f = "work/de/cache.json"
os.makedirs("work/de", exist_ok=True)
cache = json.loads(Path(cache_f).read_text()) if os.path.exists(cache_f) else {}
names = only or (list(V) + ["G_idk"])
times = {n: 0.0 for n in names}; counts = {n: 0 for n in names}
for k, pr in enumerate(pairs):
    for n in names:
        for empty in ((False,) if os.environ.get("NOEMPTY") else (False, True)):
            key = f"{n}|{'E' if empty else 'P'}|{pr.id}"
            if key in cache: continue
            p = "" if empty else pr.paragraph
            t = time.time()
            cache[key] = idk(p, pr.question) if n == "G_idk" else yn(ids_for(n, p, pr.question))
            if not empty: times[n] += time.time() - t; counts[n] += 1
    if k % 20 == 19:
        Path(cache_f).write_text(json.dumps(cache)); print(k + 1, {n: round(times[n] / max(counts[n], 1), 3) for n in names}, flush=True)
Path(cache_f).write_text(json.dumps(cache))
print("s/pair (passage pass only):", {n: round(times[n] / max(counts[n], 1), 3) for n in names})
