"""Ollama's manifest and model-config JSON, and atomic writes of small files.

A manifest names a config blob and an ordered list of layers (model weights, template, params...)
by digest. Serialization is deterministic so that a manifest's digest is stable across writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from olla.errors import InvalidDigest, InvalidRequest
from olla.registry.blobs import TEMP_PREFIX, fsync_dir, parse_digest, storage_error

MEDIA_TYPE_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_MODEL = "application/vnd.ollama.image.model"
MEDIA_TYPE_PARAMS = "application/vnd.ollama.image.params"
MEDIA_TYPE_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_TYPE_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_TYPE_LICENSE = "application/vnd.ollama.image.license"
MEDIA_TYPE_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_TYPE_ADAPTER = "application/vnd.ollama.image.adapter"
# a vision projector (llama.cpp's mmproj GGUF): the model reads images through it
MEDIA_TYPE_PROJECTOR = "application/vnd.ollama.image.projector"
# one file of a model that is a directory (EXL2, safetensors); the layer's `name` is its path
MEDIA_TYPE_FILE = "application/vnd.olla.image.file"
LAYER_MEDIA_TYPES: frozenset[str] = frozenset(
    {
        MEDIA_TYPE_MODEL,
        MEDIA_TYPE_PARAMS,
        MEDIA_TYPE_TEMPLATE,
        MEDIA_TYPE_SYSTEM,
        MEDIA_TYPE_LICENSE,
        MEDIA_TYPE_MESSAGES,
        MEDIA_TYPE_ADAPTER,
        MEDIA_TYPE_PROJECTOR,
        MEDIA_TYPE_FILE,
    }
)


def _dumps(obj: object) -> bytes:
    # Compact and in insertion order: the same object always yields the same bytes (and digest).
    # ASCII escapes also keep a lone surrogate read from JSON encodable.
    return json.dumps(obj, separators=(",", ":")).encode("ascii")


def _loads(data: bytes, what: str) -> object:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidRequest(f"corrupt {what}: not JSON: {exc}") from None


def _optional_str(d: Mapping[str, object], key: str) -> str | None:
    value = d.get(key)
    if value is None or value == "":
        return None  # Ollama writes these with `omitempty`: absent and "" mean the same
    if not isinstance(value, str):
        raise InvalidRequest(f"field '{key}' must be a string")
    return value


@dataclass(frozen=True)
class Layer:
    """One blob reference. Unknown media types are kept: newer Ollama versions add some."""

    media_type: str
    digest: str
    size: int
    from_: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        # Canonicalize here so two Layers for the same blob compare equal and serialize alike.
        try:
            object.__setattr__(self, "digest", parse_digest(self.digest))
        except InvalidDigest as exc:
            raise InvalidDigest(f"field 'digest': {exc}") from None
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise InvalidRequest(f"field 'size' must be a non-negative integer, got {self.size!r}")

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.from_ is not None:
            d["from"] = self.from_
        if self.name is not None:
            d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Layer:
        if not isinstance(d, Mapping):
            raise InvalidRequest(f"layer must be a JSON object, got {type(d).__name__}")
        media_type = d.get("mediaType")
        if not isinstance(media_type, str) or not media_type:
            raise InvalidRequest("field 'mediaType' must be a non-empty string")
        digest, size = d.get("digest"), d.get("size")
        from_, name = _optional_str(d, "from"), _optional_str(d, "name")
        # __post_init__ checks the digest's form and the size, naming the field.
        return cls(media_type, digest, size, from_, name)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Manifest:
    """A model: its config blob and its layers, in order."""

    config: Layer
    layers: tuple[Layer, ...]
    schema_version: int = 2
    media_type: str = MEDIA_TYPE_MANIFEST

    def __post_init__(self) -> None:
        # Accept any sequence from callers but store a tuple, so the manifest stays hashable.
        object.__setattr__(self, "layers", tuple(self.layers))

    def to_json(self) -> bytes:
        return _dumps(
            {
                "schemaVersion": self.schema_version,
                "mediaType": self.media_type,
                "config": self.config.to_dict(),
                "layers": [layer.to_dict() for layer in self.layers],
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        obj = _loads(data, "manifest")
        if not isinstance(obj, dict):
            raise InvalidRequest("corrupt manifest: expected a JSON object")
        version = obj.get("schemaVersion")
        if isinstance(version, bool) or version != 2:
            raise InvalidRequest(f"corrupt manifest: schemaVersion must be 2, got {version!r}")
        media_type = obj.get("mediaType", MEDIA_TYPE_MANIFEST)
        if not isinstance(media_type, str):
            raise InvalidRequest("corrupt manifest: mediaType must be a string")
        raw_layers = obj.get("layers")
        if not isinstance(raw_layers, list):
            raise InvalidRequest("corrupt manifest: 'layers' must be a list")
        if "config" not in obj:
            raise InvalidRequest("corrupt manifest: 'config' is missing")
        try:
            config = Layer.from_dict(obj["config"])
        except InvalidRequest as exc:
            raise InvalidRequest(f"corrupt manifest: config: {exc}") from None
        layers = []
        for i, raw in enumerate(raw_layers):
            try:
                layers.append(Layer.from_dict(raw))
            except InvalidRequest as exc:
                raise InvalidRequest(f"corrupt manifest: layers[{i}]: {exc}") from None
        return cls(config=config, layers=tuple(layers), schema_version=2, media_type=media_type)

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.to_json()).hexdigest()

    @property
    def total_size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)

    def layer(self, media_type: str) -> Layer | None:
        """The last layer of `media_type`: later layers override earlier ones, as in Ollama."""
        found = self.layers_of(media_type)
        return found[-1] if found else None

    def layers_of(self, media_type: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.media_type == media_type]

    def blob_digests(self) -> set[str]:
        return {self.config.digest, *(layer.digest for layer in self.layers)}


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so readers see the old or the new file, never a partial one."""
    directory = path.parent
    temp = directory / f"{TEMP_PREFIX}{secrets.token_hex(16)}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(temp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
        fsync_dir(directory)
    except BaseException as exc:
        temp.unlink(missing_ok=True)  # whatever went wrong (even Ctrl-C), leave no litter
        if isinstance(exc, OSError):
            raise storage_error(exc, "file", path) from exc
        raise


def _str(d: Mapping[str, object], key: str, default: str) -> str:
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidRequest(f"corrupt model config: field '{key}' must be a string")
    return value


def _strs(d: Mapping[str, object], key: str) -> tuple[str, ...]:
    value = d.get(key)
    if value is None:
        return ()  # Go writes a nil slice as null
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"corrupt model config: field '{key}' must be a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class ModelConfig:
    """The config blob (Ollama's ConfigV2): what `/api/show` and `/api/tags` report."""

    model_format: str = "gguf"
    model_family: str = ""
    model_families: tuple[str, ...] = ()
    model_type: str = ""
    file_type: str = ""
    architecture: str = "amd64"
    os: str = "linux"
    diff_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_families", tuple(self.model_families))
        object.__setattr__(self, "diff_ids", tuple(self.diff_ids))

    def to_json(self) -> bytes:
        return _dumps(
            {
                "model_format": self.model_format,
                "model_family": self.model_family,
                "model_families": list(self.model_families),
                "model_type": self.model_type,
                "file_type": self.file_type,
                "architecture": self.architecture,
                "os": self.os,
                "rootfs": {"type": "layers", "diff_ids": list(self.diff_ids)},
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> ModelConfig:
        """Missing keys take defaults and unknown keys are ignored (newer Ollama adds some)."""
        obj = _loads(data, "model config")
        if not isinstance(obj, dict):
            raise InvalidRequest("corrupt model config: expected a JSON object")
        rootfs = obj.get("rootfs")
        rootfs = {} if rootfs is None else rootfs
        if not isinstance(rootfs, dict):
            raise InvalidRequest("corrupt model config: field 'rootfs' must be an object")
        defaults = cls()
        return cls(
            model_format=_str(obj, "model_format", defaults.model_format),
            model_family=_str(obj, "model_family", defaults.model_family),
            model_families=_strs(obj, "model_families"),
            model_type=_str(obj, "model_type", defaults.model_type),
            file_type=_str(obj, "file_type", defaults.file_type),
            architecture=_str(obj, "architecture", defaults.architecture),
            os=_str(obj, "os", defaults.os),
            diff_ids=_strs(rootfs, "diff_ids"),
        )
