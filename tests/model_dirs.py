"""Model directories in Hugging Face's layout for tests: real config and tokenizer files, and
weights that are bytes only (nothing here loads them; exllamav2 runs on a GPU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# SmolLM2-135M's shape
LLAMA_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "bos_token_id": 1,
    "eos_token_id": 2,
}
EXL2_QUANT = {"quant_method": "exl2", "version": "0.3.2", "bits": 4.0, "head_bits": 6}
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def model_files(exl2: bool = True, weights: bytes = b"\0" * 4096) -> dict[str, bytes]:
    """The files of a small model directory, by path: EXL2 by default, else plain BF16."""
    config = {**LLAMA_CONFIG, **({"quantization_config": EXL2_QUANT} if exl2 else {})}
    tokenizer_config = {
        "bos_token": {"content": "<|im_start|>", "special": True},
        "eos_token": "<|im_end|>",
        "chat_template": CHAT_TEMPLATE,
    }
    return {
        "config.json": json.dumps(config, indent=2).encode(),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE"}}).encode(),
        "tokenizer_config.json": json.dumps(tokenizer_config).encode(),
        "output.safetensors": weights,
    }


def write_model_dir(directory: Path, files: dict[str, bytes] | None = None) -> Path:
    """Write `files` (default: `model_files()`) and a README that is not part of the model."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in {
        **(files if files is not None else model_files()),
        "README.md": b"# not a model file\n",
    }.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return directory
