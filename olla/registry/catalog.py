"""Where a pull comes from: `hf.co/{owner}/{repo}[:tag]`, or a short name from the catalog.

The catalog maps Ollama-style short names (`smollm2:135m`) to Hugging Face repositories of GGUF
files and the quantization to take. A short name is stored under its own name, as Ollama does;
a Hugging Face name is stored as `hf.co/{owner}/{repo}:{tag}` (`huggingface.co` means the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from olla.errors import InvalidName, NotFound
from olla.registry.names import DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG, ModelName

HF_HOSTS = ("hf.co", "huggingface.co")
DEFAULT_QUANT = "Q4_K_M"


@dataclass(frozen=True)
class Origin:
    """A pull's source: the repository, the file selector (a quantization or a file name)."""

    repo: str  # owner/name
    selector: str  # "" for the default quantization
    revision: str = "main"


@dataclass(frozen=True)
class CatalogEntry:
    repo: str
    quant: str = DEFAULT_QUANT


# Popular small models; `latest` of a family is what Ollama's library calls latest.
CATALOG: Mapping[str, CatalogEntry] = MappingProxyType(
    {
        "smollm2:135m": CatalogEntry("bartowski/SmolLM2-135M-Instruct-GGUF"),
        "smollm2:360m": CatalogEntry("bartowski/SmolLM2-360M-Instruct-GGUF"),
        "smollm2:1.7b": CatalogEntry("bartowski/SmolLM2-1.7B-Instruct-GGUF"),
        "smollm2:latest": CatalogEntry("bartowski/SmolLM2-1.7B-Instruct-GGUF"),
        "qwen2.5:0.5b": CatalogEntry("Qwen/Qwen2.5-0.5B-Instruct-GGUF"),
        "qwen2.5:1.5b": CatalogEntry("Qwen/Qwen2.5-1.5B-Instruct-GGUF"),
        "qwen2.5:3b": CatalogEntry("Qwen/Qwen2.5-3B-Instruct-GGUF"),
        "qwen2.5:latest": CatalogEntry("Qwen/Qwen2.5-7B-Instruct-GGUF"),
        "llama3.2:1b": CatalogEntry("bartowski/Llama-3.2-1B-Instruct-GGUF"),
        "llama3.2:3b": CatalogEntry("bartowski/Llama-3.2-3B-Instruct-GGUF"),
        "llama3.2:latest": CatalogEntry("bartowski/Llama-3.2-3B-Instruct-GGUF"),
        "gemma3:270m": CatalogEntry("unsloth/gemma-3-270m-it-GGUF"),
        "gemma3:1b": CatalogEntry("unsloth/gemma-3-1b-it-GGUF"),
        "gemma3:latest": CatalogEntry("unsloth/gemma-3-4b-it-GGUF"),
        "phi3.5:latest": CatalogEntry("bartowski/Phi-3.5-mini-instruct-GGUF"),
        "tinyllama:latest": CatalogEntry("TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF"),
    }
)


def resolve(text: str) -> tuple[ModelName, Origin]:
    """The name a pull is stored under and where it comes from; NotFound for unknown names."""
    name = ModelName.parse(text)
    host = name.host.lower()
    if host in HF_HOSTS:
        tag = "" if name.tag.lower() == DEFAULT_TAG else name.tag
        stored = ModelName.from_parts("hf.co", name.namespace, name.model, name.tag)
        return stored, Origin(f"{name.namespace}/{name.model}", tag)
    if host == DEFAULT_HOST.lower() and name.namespace.lower() == DEFAULT_NAMESPACE:
        entry = CATALOG.get(f"{name.model}:{name.tag}".lower())
        if entry is not None:
            return name, Origin(entry.repo, entry.quant)
    known = ", ".join(sorted(CATALOG))
    if host == DEFAULT_HOST.lower():
        raise NotFound(
            f"olla does not know a model named {name.display}: pull Hugging Face GGUF repositories "
            f"as hf.co/{{owner}}/{{repo}}[:quantization], or one of: {known}"
        )
    raise InvalidName(
        f"cannot pull from {name.host}: olla pulls from Hugging Face (hf.co/{{owner}}/{{repo}})"
    )
