"""What a model file says of itself, read once: its architecture, context and embedding lengths,
whether it is an embedding model, and its chat template with the BOS and EOS texts it uses.

Blobs are content-addressed and never change, so the facts of a path are cached for the life of
the daemon (reading a GGUF's metadata takes about 0.2 s). `/api/tags`, `/api/show` and every
request's prompt and capabilities read them here.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from olla.registry.gguf_info import GGUFInfo, read_gguf_info
from olla.registry.model_dir import CONFIG, chat_format, read_dir_info


@dataclass(frozen=True)
class ModelFacts:
    """A model file's facts; a directory model (EXL2, safetensors) has its config.json's."""

    architecture: str = ""
    context_length: int | None = None  # what it was trained for
    embedding_length: int | None = None
    embedding: bool = False  # it pools (an embedding model): it embeds, it does not complete
    # Ollama's older /api/embeddings gives this model's vectors as they come, not normalised
    raw_legacy_embeddings: bool = False
    chat_template: str | None = None  # Jinja
    bos_token: str = ""
    eos_token: str = ""


def read_facts(path: Path) -> ModelFacts:
    """The facts of a GGUF file or a model directory."""
    if path.is_dir():
        info = read_dir_info((path / CONFIG).read_bytes(), str(path / CONFIG))
        template, bos, eos = chat_format(path)
        return ModelFacts(
            architecture=info.family,
            context_length=info.context_length,
            embedding_length=info.embedding,
            chat_template=template,
            bos_token=bos,
            eos_token=eos,
        )
    return _gguf_facts(read_gguf_info(path))


def _gguf_facts(info: GGUFInfo) -> ModelFacts:
    meta = info.metadata
    tokens = meta.get("tokenizer.ggml.tokens")
    return ModelFacts(
        architecture=info.architecture,
        context_length=info.context_length,
        embedding_length=info.embedding_length,
        embedding=f"{info.architecture}.pooling_type" in meta,
        raw_legacy_embeddings=raw_legacy_embeddings(info.architecture, meta),
        chat_template=info.chat_template,
        bos_token=_token_text(tokens, meta.get("tokenizer.ggml.bos_token_id")),
        eos_token=_token_text(tokens, meta.get("tokenizer.ggml.eos_token_id")),
    )


def raw_legacy_embeddings(arch: str, meta: Mapping[str, object]) -> bool:
    """Whether Ollama's /api/embeddings returns this model's vectors unnormalised. Its old
    runners did for these embedding models only, and Ollama keeps that: BERT models whose
    tokenizer is not BERT's, or that say not to normalise; nomic-bert unless it says to."""
    if f"{arch}.pooling_type" not in meta:
        return False
    normalize = meta.get(f"{arch}.normalize_embeddings")
    if arch == "bert":
        return meta.get("tokenizer.ggml.model", "bert") != "bert" or normalize is False
    if arch in ("nomic-bert", "nomic-bert-moe"):
        return normalize is not True
    return False


def _token_text(tokens: object, token_id: object) -> str:
    if isinstance(tokens, list) and isinstance(token_id, int) and 0 <= token_id < len(tokens):
        return str(tokens[token_id])
    return ""


class Facts:
    """ModelFacts by model path, each read once; safe to call from worker threads."""

    def __init__(self) -> None:
        self._cache: dict[Path, ModelFacts] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> ModelFacts:
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None:
            return cached
        facts = read_facts(path)
        with self._lock:
            self._cache[path] = facts
        return facts
