"""Models that are a directory of files in Hugging Face's layout, as exllamav2 loads them.

`config.json`, the tokenizer (`tokenizer.json` or `tokenizer.model`, `tokenizer_config.json` with
its chat template) and the weights in `*.safetensors`: quantized to EXL2 (config.json's
`quantization_config.quant_method` is "exl2", written by exllamav2's converter) or not. In the
store each file is a blob with a layer of its own that records the file's name (`MEDIA_TYPE_FILE`),
so list, show, cp and rm treat the model as any other; a runner opens a directory of links to
the blobs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from olla.errors import InvalidRequest

FORMAT_EXL2 = "exl2"
FORMAT_SAFETENSORS = "safetensors"
DIRECTORY_FORMATS = frozenset({FORMAT_EXL2, FORMAT_SAFETENSORS})

# what a model directory's files are; the rest (README, images, .gitattributes, pickles,
# remote code) stays behind
_WANTED_SUFFIXES = (".safetensors", ".json", ".model", ".tiktoken", ".txt", ".jinja")
CONFIG = "config.json"  # at the directory's top, as every file named here
_TOKENIZERS = ("tokenizer.json", "tokenizer.model")
_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}


def wanted_file(path: str) -> bool:
    """Whether a file of a repo or directory belongs to the model (a relative POSIX path)."""
    relative = PurePosixPath(path)
    if relative.is_absolute() or not relative.parts or "\\" in path:
        return False
    if any(part.startswith(".") for part in relative.parts):  # ".." and hidden files
        return False
    return path.lower().endswith(_WANTED_SUFFIXES) and not path.lower().endswith(".gguf")


def check_files(names: Iterable[str], where: str) -> None:
    """InvalidRequest naming what a model directory lacks: config.json and a tokenizer at its
    top (where exllamav2 and olla read them), weights anywhere."""
    have = set(names)
    missing = []
    if CONFIG not in have:
        missing.append(CONFIG)
    if not have & set(_TOKENIZERS):
        missing.append("a tokenizer (tokenizer.json or tokenizer.model)")
    if not any(n.endswith(".safetensors") for n in have):
        missing.append("weights (*.safetensors)")
    if missing:
        raise InvalidRequest(
            f"{where} is not a model directory olla can load: it lacks {', '.join(missing)}; "
            "olla loads GGUF files, and EXL2 or safetensors models in Hugging Face's layout"
        )


@dataclass(frozen=True)
class DirInfo:
    """What config.json says of a directory model: its format, family and shape."""

    model_format: str  # FORMAT_EXL2 or FORMAT_SAFETENSORS
    family: str  # config.json's model_type: "llama", "qwen2"...
    file_type: str  # "4.0bpw" for EXL2, else the dtype ("F16", "BF16", "F32")
    parameters: int  # counted from the shapes
    layers: int
    embedding: int
    heads: int
    kv_heads: int
    head_dim: int
    feed_forward: int
    vocab: int
    context_length: int  # max_position_embeddings
    tied_embeddings: bool

    @property
    def parameter_size(self) -> str:
        """As Ollama writes it: 135M, 1.2B."""
        n = self.parameters
        if n >= 1e9:
            return f"{n / 1e9:.1f}B"
        return f"{n / 1e6:.0f}M"

    def model_info(self) -> dict[str, Any]:
        """`/api/show`'s model_info, with the keys Ollama takes from a GGUF."""
        arch = self.family or "unknown"
        return {
            "general.architecture": arch,
            "general.file_type": self.file_type,
            "general.parameter_count": self.parameters,
            "general.quantization_version": self.model_format,
            f"{arch}.block_count": self.layers,
            f"{arch}.context_length": self.context_length,
            f"{arch}.embedding_length": self.embedding,
            f"{arch}.feed_forward_length": self.feed_forward,
            f"{arch}.attention.head_count": self.heads,
            f"{arch}.attention.head_count_kv": self.kv_heads,
            f"{arch}.vocab_size": self.vocab,
        }

    @property
    def embedding_bytes(self) -> int:
        """The FP16 token embeddings, which exllamav2 keeps in RAM."""
        return self.vocab * self.embedding * 2

    @property
    def kv_bytes_per_token(self) -> int:
        """Keys and values of one token over every layer, in FP16 (exllamav2's default cache)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2


def read_dir_info(config_json: bytes, where: str = "config.json") -> DirInfo:
    """Parse a model's config.json; InvalidRequest says which field is missing or wrong."""
    try:
        config = json.loads(config_json)
    except ValueError as exc:
        raise InvalidRequest(f"{where} is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise InvalidRequest(f"{where} must hold a JSON object")
    text = config.get("text_config")  # multimodal configs nest the language model's
    if isinstance(text, dict):
        config = {**config, **text}
    embedding = _field(config, where, "hidden_size")
    layers = _field(config, where, "num_hidden_layers")
    heads = _field(config, where, "num_attention_heads")
    kv_heads = _field(config, where, "num_key_value_heads", heads)
    head_dim = _field(config, where, "head_dim", embedding // heads)
    feed_forward = _field(config, where, "intermediate_size", 4 * embedding)
    vocab = _field(config, where, "vocab_size")
    tied = bool(config.get("tie_word_embeddings", False))
    quant = config.get("quantization_config")
    if isinstance(quant, dict) and quant.get("quant_method") == FORMAT_EXL2:
        model_format, file_type = FORMAT_EXL2, f"{float(quant.get('bits', 0)):.1f}bpw"
    elif isinstance(quant, dict) and quant.get("quant_method"):
        raise InvalidRequest(
            f"{where}: {quant.get('quant_method')} quantization is not supported; olla loads "
            "EXL2 and unquantized safetensors directories, and GGUF files"
        )
    else:
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "float16")
        model_format, file_type = FORMAT_SAFETENSORS, _DTYPES.get(dtype, dtype.upper())
    attention = embedding * heads * head_dim * 2 + embedding * kv_heads * head_dim * 2
    per_layer = attention + 3 * embedding * feed_forward + 2 * embedding
    parameters = layers * per_layer + vocab * embedding * (1 if tied else 2) + embedding
    return DirInfo(
        model_format=model_format,
        family=str(config.get("model_type") or ""),
        file_type=file_type,
        parameters=parameters,
        layers=layers,
        embedding=embedding,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        feed_forward=feed_forward,
        vocab=vocab,
        context_length=_field(config, where, "max_position_embeddings", 4096),
        tied_embeddings=tied,
    )


def _field(config: Mapping[str, Any], where: str, key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if value is None:
        raise InvalidRequest(f"{where} lacks {key!r}; is it a language model's config?")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidRequest(f"{where}: {key!r} must be a positive integer, not {value!r}")
    return value


def chat_format(directory: Path) -> tuple[str | None, str, str]:
    """The model's Jinja chat template (tokenizer_config.json's, or chat_template.jinja's) and
    its BOS and EOS token texts, which templates use."""
    try:
        config = (directory / "tokenizer_config.json").read_text(encoding="utf-8")
    except OSError:
        config = None
    jinja = directory / "chat_template.jinja"
    return chat_format_of(config, jinja.read_text(encoding="utf-8") if jinja.is_file() else None)


def chat_format_of(
    tokenizer_config: str | None, chat_template_jinja: str | None
) -> tuple[str | None, str, str]:
    """`chat_format` from the two files' texts (None: no such file)."""
    try:
        config = json.loads(tokenizer_config) if tokenizer_config is not None else {}
    except ValueError:
        config = {}
    config = config if isinstance(config, dict) else {}
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if chat_template_jinja is not None:
        template = chat_template_jinja
    template = template if isinstance(template, str) and template else None
    return template, _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))


def _token_text(token: Any) -> str:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else ""
