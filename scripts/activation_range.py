"""Largest activation of the default model in float32, over ranking and distraction prompts
and a few odd inputs: how far it stays under float16's largest finite value (65,504).

    .venv/bin/python scripts/activation_range.py [--questions 200]    (docs/gpu.md)

HotpotQA dev 0-N (the development split). Every linear layer's output and every decoder
layer's output (the residual stream) is watched with forward hooks; the largest absolute value
of each kind is printed, with where it was.
"""

from __future__ import annotations

import argparse
import json

import torch

from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.models import load_model
from ragfocus.prompt import build_prompt
from ragfocus.scoring.distraction import tokenize_distraction

FLOAT16_MAX = 65504.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--distraction-questions", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    loaded = load_model(device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    largest: dict[str, tuple[float, str, str]] = {}
    current = {"input": ""}

    def watch(kind: str, name: str):
        def hook(_module, _inputs, output):
            tensor = output[0] if isinstance(output, tuple) else output
            value = float(tensor.detach().abs().max())
            if value > largest.get(kind, (0.0, "", ""))[0]:
                largest[kind] = (value, name, current["input"])
        return hook

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(watch("linear output", name))
        elif type(module).__name__.endswith("DecoderLayer"):
            module.register_forward_hook(watch("residual stream (layer output)", name))

    def run(label: str, ids: list[int]) -> None:
        current["input"] = label
        with torch.inference_mode():
            model(input_ids=torch.tensor([ids]), logits_to_keep=1)

    questions = hotpotqa(0, args.questions)
    for q in questions:
        prompt = build_prompt(tokenizer, q.question, q.paragraphs)
        run(f"ranking prompt, dev {q.index}", prompt.prefix_ids + prompt.query_ids)
    for q in questions[: args.distraction_questions]:
        for sequence, passage in zip(tokenize_distraction(tokenizer, [(q.question, q.paragraphs)]).sequences, range(100)):
            run(f"distraction prompt, dev {q.index} passage {passage}", sequence)
    odd = {
        "one word repeated": "data " * 1500,
        "digits": " ".join(str(i) for i in range(1200)),
        "code": "def f(x):\n    return [i * x for i in range(10) if i % 2]\n" * 60,
        "non-Latin": "東京は日本の首都です。" * 200 + " Ελληνικά κείμενα " * 100,
        "no text": "",
        "long prompt (7,000 tokens)": " ".join(q.paragraphs[0] for q in questions[:60]),
    }
    for label, text in odd.items():
        prompt = build_prompt(tokenizer, "What is this about?", [text] if text else ["."])
        run(label, (prompt.prefix_ids + prompt.query_ids)[:8000])
    report = {kind: {"max_abs": value, "module": name, "input": where, "under_float16_max": FLOAT16_MAX / value}
              for kind, (value, name, where) in largest.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
