"""Registry: the model store on disk (manifests + blobs), as one facade.

Layout, as Ollama's: `<models>/manifests/<host>/<namespace>/<model>/<tag>` (JSON manifests) and
`<models>/blobs/sha256-<hex>`. All methods are synchronous; the daemon calls them in a thread.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from olla.chat import Message, ParamValue
from olla.errors import InvalidRequest, ModelNotFound, NotFound
from olla.registry import manifests as mf
from olla.registry.blobs import BlobStore
from olla.registry.facts import Facts
from olla.registry.names import ModelName

log = logging.getLogger(__name__)

# An uploaded blob is not yet referenced by any manifest; `olla rm` of another model must not
# prune it before the `create` that uses it arrives.
UPLOAD_GRACE_S = 3600.0


@dataclass(frozen=True)
class ModelEntry:
    """One stored model: its name, manifest, manifest digest and modification time."""

    name: ModelName
    manifest: mf.Manifest
    modified: float

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def size(self) -> int:
        return self.manifest.total_size


@dataclass(frozen=True)
class ResolvedModel:
    """A model with its layers read: what `show` reports and what a runner loads."""

    entry: ModelEntry
    model_path: Path | None
    config: mf.ModelConfig
    parameters: dict[str, ParamValue] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    messages: tuple[Message, ...] = ()
    licenses: tuple[str, ...] = ()
    adapter_paths: tuple[Path, ...] = ()
    projector_path: Path | None = None  # a vision projector layer: the model reads images


class Registry:
    """The model store: list, resolve, write, copy and delete models; prune unreferenced blobs."""

    def __init__(self, root: Path, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.blobs = BlobStore(root / "blobs")
        self.manifest_root = root / "manifests"
        self.facts = Facts()  # what each model file says of itself, read once
        self._monotonic = monotonic
        self._lock = threading.RLock()
        self._pinned: dict[str, float] = {}

    def manifest_path(self, name: ModelName) -> Path:
        return self.manifest_root.joinpath(*name.filepath().parts)

    def pin(self, digest: str) -> None:
        """Protect a freshly uploaded blob from pruning for a grace period."""
        with self._lock:
            self._pinned[digest] = self._monotonic() + UPLOAD_GRACE_S

    def entry(self, name: ModelName) -> ModelEntry:
        """The stored model called `name`; ModelNotFound if there is none."""
        path = self.manifest_path(name)
        try:
            data = path.read_bytes()
            modified = path.stat().st_mtime
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ModelNotFound(name.display) from None
        return ModelEntry(name=name, manifest=mf.Manifest.from_json(data), modified=modified)

    def exists(self, name: ModelName) -> bool:
        return self.manifest_path(name).is_file()

    def list_models(self) -> list[ModelEntry]:
        """Every readable model, most recently modified first; unreadable manifests are logged."""
        entries = []
        if not self.manifest_root.is_dir():
            return []
        for path in self.manifest_root.glob("*/*/*/*"):
            if not path.is_file() or path.name.startswith(".tmp-"):
                continue
            rel = PurePosixPath(*path.relative_to(self.manifest_root).parts)
            try:
                entries.append(self.entry(ModelName.from_filepath(rel)))
            except (InvalidRequest, NotFound) as exc:
                log.warning("skipping manifest %s: %s", path, exc)
        return sorted(entries, key=lambda e: e.modified, reverse=True)

    def write_manifest(self, name: ModelName, manifest: mf.Manifest) -> None:
        """Store `manifest` under `name`, after checking that every blob it names is present."""
        for digest in sorted(manifest.blob_digests()):
            if not self.blobs.exists(digest):
                raise NotFound(f"blob {digest} is missing from the store; upload it first")
        with self._lock:
            mf.write_atomic(self.manifest_path(name), manifest.to_json())
            for digest in manifest.blob_digests():
                self._pinned.pop(digest, None)  # referenced now; the manifest protects it

    def resolve(self, name: ModelName) -> ResolvedModel:
        """Read a model's layers: model file path, params, template, system, messages, licenses."""
        return self.resolve_entry(self.entry(name))

    def resolve_entry(self, entry: ModelEntry) -> ResolvedModel:
        """`resolve` for an entry already read (its manifest as it was then)."""
        manifest = entry.manifest
        model_layer = manifest.layer(mf.MEDIA_TYPE_MODEL) or manifest.layer(mf.MEDIA_TYPE_FILE)
        params_layer = manifest.layer(mf.MEDIA_TYPE_PARAMS)
        messages_layer = manifest.layer(mf.MEDIA_TYPE_MESSAGES)
        # the first projector, as Ollama loads and shows only ProjectorPaths[0]
        projector_layer = next(iter(manifest.layers_of(mf.MEDIA_TYPE_PROJECTOR)), None)
        parameters = json.loads(self._read_text(params_layer)) if params_layer else {}
        raw_messages = json.loads(self._read_text(messages_layer)) if messages_layer else []
        return ResolvedModel(
            entry=entry,
            model_path=self._model_path(manifest) if model_layer else None,
            config=mf.ModelConfig.from_json(self.blobs.path(manifest.config.digest).read_bytes()),
            parameters=parameters,
            template=self._text_of(manifest, mf.MEDIA_TYPE_TEMPLATE),
            system=self._text_of(manifest, mf.MEDIA_TYPE_SYSTEM),
            messages=tuple(Message(m["role"], m["content"]) for m in raw_messages),
            licenses=tuple(
                self._read_text(layer) for layer in manifest.layers_of(mf.MEDIA_TYPE_LICENSE)
            ),
            adapter_paths=tuple(
                self.blobs.path(layer.digest) for layer in manifest.layers_of(mf.MEDIA_TYPE_ADAPTER)
            ),
            projector_path=self.blobs.path(projector_layer.digest) if projector_layer else None,
        )

    def _model_path(self, manifest: mf.Manifest) -> Path:
        """What a runner opens: the GGUF blob; for a split GGUF the first of links named
        `model-0000i-of-0000n.gguf` in one directory, which is how llama.cpp finds the others;
        for a directory model (EXL2, safetensors) a directory of links named as its files."""
        files = manifest.layers_of(mf.MEDIA_TYPE_FILE)
        if files:
            directory = self.root / "dirs" / manifest.digest.removeprefix("sha256:")
            self._link_all(directory, [(layer.name or "", layer) for layer in files])
            return directory
        parts = manifest.layers_of(mf.MEDIA_TYPE_MODEL)
        if len(parts) == 1:
            return self.blobs.path(parts[0].digest)
        directory = self.root / "splits" / manifest.digest.removeprefix("sha256:")
        names = [f"model-{i:05d}-of-{len(parts):05d}.gguf" for i in range(1, len(parts) + 1)]
        self._link_all(directory, list(zip(names, parts, strict=True)))
        return directory / names[0]

    def _link_all(self, directory: Path, links: list[tuple[str, mf.Layer]]) -> None:
        """Symlinks `directory/name` -> each layer's blob, made once."""
        for name, layer in links:
            relative = PurePosixPath(name)
            if not name or relative.is_absolute() or ".." in relative.parts:
                raise InvalidRequest(f"corrupt manifest: a file layer is named {name!r}")
            link = directory.joinpath(*relative.parts)
            if not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                try:
                    link.symlink_to(self.blobs.path(layer.digest))
                except FileExistsError:
                    pass  # another request made it first

    def copy(self, source: ModelName, destination: ModelName) -> None:
        """Make `destination` name the same manifest as `source` (blobs are shared)."""
        entry = self.entry(source)
        with self._lock:
            mf.write_atomic(self.manifest_path(destination), entry.manifest.to_json())

    def delete(self, name: ModelName) -> list[str]:
        """Remove the model's manifest, then every blob no manifest references any more."""
        with self._lock:
            path = self.manifest_path(name)
            if not path.is_file():
                raise ModelNotFound(name.display)
            path.unlink()
            self._remove_empty_parents(path.parent)
            return self.prune()

    def prune(self) -> list[str]:
        """Delete blobs that no manifest references (recent uploads excepted); returns them."""
        with self._lock:
            referenced: set[str] = set()
            manifests: set[str] = set()  # their link directories stay
            for entry in self.list_models():
                referenced |= entry.manifest.blob_digests()
                manifests.add(entry.digest.removeprefix("sha256:"))
            now = self._monotonic()
            self._pinned = {d: t for d, t in self._pinned.items() if t > now}
            removed = []
            for digest in self.blobs.digests():
                if digest not in referenced and digest not in self._pinned:
                    if self.blobs.delete(digest):
                        removed.append(digest)
            if removed:
                log.info("pruned %d unreferenced blob(s)", len(removed), extra={"blobs": removed})
            self._prune_links(manifests)
            return removed

    def _prune_links(self, kept: set[str]) -> None:
        """Remove the link directories (split GGUFs, directory models) of deleted manifests."""
        for kind in ("splits", "dirs"):
            root = self.root / kind
            if root.is_dir():
                for directory in root.iterdir():
                    if directory.name not in kept:
                        shutil.rmtree(directory, ignore_errors=True)

    def _remove_empty_parents(self, directory: Path) -> None:
        while directory != self.manifest_root and self.manifest_root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def _text_of(self, manifest: mf.Manifest, media_type: str) -> str | None:
        layer = manifest.layer(media_type)
        return self._read_text(layer) if layer else None

    def _read_text(self, layer: mf.Layer) -> str:
        return self.blobs.path(layer.digest).read_text(encoding="utf-8")
