"""Where a Hugging Face pull comes from: `hf.co/{owner}/{repo}[:tag]`.

A Hugging Face name is stored as `hf.co/{owner}/{repo}:{tag}` (`huggingface.co` means the same).
Short names (`smollm2:135m`, `llama3.2`) once mapped to Hugging Face repositories here; they are
names on Ollama's registry, and go there now (`olla.registry.library_names`).
"""

from __future__ import annotations

from dataclasses import dataclass

from olla.errors import InvalidName
from olla.registry.names import DEFAULT_TAG, ModelName

HF_HOSTS = ("hf.co", "huggingface.co")


@dataclass(frozen=True)
class Origin:
    """A pull's source: the repository, the file selector (a quantization or a file name)."""

    repo: str  # owner/name
    selector: str  # "" for the default quantization
    revision: str = "main"


def resolve_hub(text: str) -> tuple[ModelName, Origin]:
    """The name a Hugging Face pull is stored under and the repository it comes from;
    InvalidName for a name on another host (`library_names.resolve_pull` sends those to a
    registry)."""
    name = ModelName.parse(text)
    if name.host.lower() not in HF_HOSTS:
        raise InvalidName(
            f"{name.display} is not a Hugging Face name: write hf.co/{{owner}}/{{repo}}"
        )
    tag = "" if name.tag.lower() == DEFAULT_TAG else name.tag
    stored = ModelName.from_parts("hf.co", name.namespace, name.model, name.tag)
    return stored, Origin(f"{name.namespace}/{name.model}", tag)
