"""Write a merged Llama-architecture model as GGUF with the PyPI ``gguf`` package alone.

llama.cpp's ``convert_hf_to_gguf.py`` is not on PyPI, but everything it does for a Llama model
that shares SmolLM2's tokenizer is small: the tokenizer is copied verbatim from the bundled
SmolLM2 GGUF (``tokenizer.*`` keys: vocabulary, merges, token types, chat template), the
hyperparameters come from the merged model's ``config.json``, tensor names from
``gguf.get_tensor_name_map``, and Q/K projections get llama.cpp's rotary permutation (the inverse
of what transformers undoes when it loads a GGUF). Matrices are stored F16 (or F32), norms F32.

Checked by loading the file back with ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spelltransfer.atomic import atomic_path
from spelltransfer.errors import ConfigError


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row order for rotary embeddings (interleaved halves)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_gguf(merged_dir: Path, out_file: Path, tokenizer_gguf: Path | None = None, dtype: str = "f16") -> Path:
    """Write ``merged_dir`` (HF Llama folder) to ``out_file``; tokenizer keys from ``tokenizer_gguf``."""
    import gguf
    from safetensors.numpy import load_file

    from spelltransfer.models.base_model import find_smollm2_gguf

    merged_dir = Path(merged_dir)
    config = json.loads((merged_dir / "config.json").read_text())
    if config.get("model_type") != "llama":
        raise ConfigError(f"{merged_dir}/config.json model_type={config.get('model_type')!r}: GGUF export supports llama only")
    if dtype not in ("f16", "f32"):
        raise ConfigError(f"dtype '{dtype}' unknown; use f16 or f32")
    reader = gguf.GGUFReader(tokenizer_gguf or find_smollm2_gguf())
    tokens = reader.fields["tokenizer.ggml.tokens"]
    if len(tokens.data) > config["vocab_size"]:
        raise ConfigError(f"tokenizer has {len(tokens.data)} tokens but the model's vocab_size is {config['vocab_size']}")

    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    writer = gguf.GGUFWriter(None, "llama")  # the file is opened by write_header_to_file, under a temp name
    writer.add_name(merged_dir.parent.name or "spelltransfer")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(config["hidden_size"] // n_head)
    writer.add_rope_freq_base(float(config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    for field in reader.fields.values():
        if not field.name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub_type)

    tensors: dict[str, np.ndarray] = {}
    for file in sorted(merged_dir.glob("*.safetensors")):
        tensors.update(load_file(file))
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    for hf_name, array in tensors.items():
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConfigError(f"{merged_dir}: tensor {hf_name} has no GGUF name (not a plain Llama model?)")
        array = array.astype(np.float32)
        if hf_name.endswith("self_attn.q_proj.weight"):
            array = _permute(array, n_head)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            array = _permute(array, n_kv)
        if dtype == "f16" and array.ndim == 2:
            array = array.astype(np.float16)
        writer.add_tensor(gguf_name, array)
    with atomic_path(out_file, fsync=False) as staging:
        try:
            writer.write_header_to_file(staging)
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return out_file
