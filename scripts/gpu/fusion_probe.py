"""How much of the bare forward is unfused elementwise work: the bare batched forward of the
default model (dev 0-511, length-sorted, batches of 64) eager, then with its RMSNorms, SwiGLU
and rotary embedding replaced by fused versions, and the whole base model compiled.

    python3 scripts/gpu/fusion_probe.py [variant ...]   # default: every variant

Prints, per variant, q/s over 8 batches (after a warm-up over every width), the compile time,
and the largest difference of the last hidden state from eager on one batch.
"""
import importlib.util
import os
import shutil
import sys
import time
import types

import torch
import torch.nn.functional as F
from transformers.models.llama import modeling_llama

from ragfocus import Focuser
from ragfocus.evaluation.bench import bare_forward
from ragfocus.evaluation.datasets import hotpotqa
from ragfocus.pipeline import distinct_texts
from ragfocus.passages import as_passages
from ragfocus.preparation import prepare_inputs

print("torch", torch.__version__, "| triton:", importlib.util.find_spec("triton") is not None,
      "| gcc:", shutil.which("gcc"), "| cc:", shutil.which("cc"), flush=True)
DEVICE = os.environ.get("PROBE_DEVICE", "cuda")
COUNT = int(os.environ.get("PROBE_COUNT", "512"))
f = Focuser(device=DEVICE, distraction=False)
model = f.loaded.model
print("dtype", next(model.parameters()).dtype, "| RMSNorm modules", sum(type(m).__name__.endswith("RMSNorm") for m in model.modules()), flush=True)
inputs = [(q.question, distinct_texts(as_passages(q.paragraphs)).texts) for q in hotpotqa(0, COUNT)]
host = prepare_inputs(f.loaded.tokenizer, inputs, prompt_tokens=None, sentences=False, distraction=False)
ids = [p.prefix_ids + p.query_ids for p in host.prompts]
ids.sort(key=len, reverse=True)
print("prompts", len(ids), "mean tokens", sum(map(len, ids)) / len(ids), flush=True)
probe_batch = ids[64:128] if len(ids) > 64 else ids


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def last_hidden() -> torch.Tensor:
    width = max(map(len, probe_batch))
    x = torch.zeros((len(probe_batch), width), dtype=torch.long)
    for row, seq in enumerate(probe_batch):
        x[row, : len(seq)] = torch.tensor(seq)
    with torch.inference_mode():
        out = model.base_model(input_ids=x.to(DEVICE), use_cache=False).last_hidden_state
    mask = torch.zeros_like(out[..., 0], dtype=torch.bool)
    for row, seq in enumerate(probe_batch):
        mask[row, : len(seq)] = True
    return out[mask].float()


def timed(name: str, reference: torch.Tensor | None) -> torch.Tensor:
    started = time.perf_counter()
    with torch.inference_mode():
        bare_forward(model, ids, batch_size=64)  # warm-up over every width (compiles)
    sync()
    warm = time.perf_counter() - started
    runs = []
    for _ in range(3):
        sync()
        started = time.perf_counter()
        with torch.inference_mode():
            bare_forward(model, ids, batch_size=64)
        sync()
        runs.append(len(ids) / (time.perf_counter() - started))
    hidden = last_hidden()
    diff = "" if reference is None else f" | max |diff| {float((hidden - reference).abs().max()):.4g}, mean {float((hidden - reference).abs().mean()):.3g} (mean |h| {float(reference.abs().mean()):.3g})"
    print(f"== {name}: {sorted(runs)[1]:.1f} q/s (runs {', '.join(f'{r:.1f}' for r in runs)}), warm-up {warm:.1f} s{diff}", flush=True)
    return hidden


def norm_modules():
    return [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]


def rms_half(self, x):
    return F.rms_norm(x, (x.shape[-1],), weight=self.weight, eps=self.variance_epsilon)


def rms_float(self, x):
    return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.variance_epsilon).to(x.dtype)


def llama_rms(x, weight, eps: float):
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def swiglu(gate, up):
    return F.silu(gate) * up


compiled_rms = torch.compile(llama_rms, dynamic=True)
compiled_swiglu = torch.compile(swiglu, dynamic=True)
compiled_rotary = torch.compile(modeling_llama.apply_rotary_pos_emb, dynamic=True)
original_rotary = modeling_llama.apply_rotary_pos_emb


def patch_norms(forward):
    for m in norm_modules():
        m.forward = types.MethodType(forward, m)


def unpatch():
    for m in model.modules():
        if "forward" in m.__dict__:
            del m.forward
    modeling_llama.apply_rotary_pos_emb = original_rotary


def mlp_forward(self, x):
    return self.down_proj(compiled_swiglu(self.gate_proj(x), self.up_proj(x)))


wanted = set(sys.argv[1:]) or {"rms_half", "rms_float", "compiled_rms", "compiled_all", "whole"}
reference = timed("eager", None)
if "rms_half" in wanted:
    patch_norms(rms_half); timed("F.rms_norm in half with weight", reference); unpatch()
if "rms_float" in wanted:
    patch_norms(rms_float); timed("F.rms_norm in float32, weight after", reference); unpatch()
if "compiled_rms" in wanted:
    patch_norms(lambda self, x: compiled_rms(x, self.weight, self.variance_epsilon)); timed("compiled Llama RMSNorm", reference); unpatch()
if "compiled_all" in wanted:
    patch_norms(lambda self, x: compiled_rms(x, self.weight, self.variance_epsilon))
    for layer in model.base_model.layers:
        layer.mlp.forward = types.MethodType(mlp_forward, layer.mlp)
    modeling_llama.apply_rotary_pos_emb = compiled_rotary
    timed("compiled RMSNorm + SwiGLU + rotary", reference)
    unpatch()
if "whole" in wanted:
    try:
        model.base_model.forward = torch.compile(model.base_model.forward, dynamic=True)
        timed("whole base model compiled", reference)
    except Exception as error:  # noqa: BLE001
        print("== whole: failed:", type(error).__name__, str(error)[:500], flush=True)
    unpatch()
