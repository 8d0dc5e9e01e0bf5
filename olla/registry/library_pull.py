"""Pull from an Ollama-protocol registry (`olla.registry.library_names` says which): its manifest,
then its blobs into the store, then the manifest, last, as Ollama's `PullModel` does.

The manifest is read first and every layer's media type checked against what olla can use, so a
model olla cannot run (safetensors tensors, a draft model, a type it does not know) is refused
before a byte of it is downloaded; a vision projector layer comes along. Each blob (the config
and every layer) goes through `olla.registry.fetch`: stored once, shared between pulls,
resumed, checked against its digest.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from olla.errors import InvalidDigest, InvalidRequest, NotSupported, UpstreamError
from olla.registry import manifests as mf
from olla.registry.blob_parts import PartedDownload, PartSizes
from olla.registry.fetch import Downloads, Report, Wanted, check_room, fetch_blob, partial_path
from olla.registry.library_client import RegistryClient, ShortRead, unreachable
from olla.registry.library_names import LibraryRef
from olla.registry.store import Registry

log = logging.getLogger(__name__)

# Ollama's layer media types and olla's: the same names, but for the template's old name
LAYER_TYPES = {
    mf.MEDIA_TYPE_MODEL: mf.MEDIA_TYPE_MODEL,
    mf.MEDIA_TYPE_TEMPLATE: mf.MEDIA_TYPE_TEMPLATE,
    "application/vnd.ollama.image.prompt": mf.MEDIA_TYPE_TEMPLATE,
    mf.MEDIA_TYPE_PARAMS: mf.MEDIA_TYPE_PARAMS,
    mf.MEDIA_TYPE_SYSTEM: mf.MEDIA_TYPE_SYSTEM,
    mf.MEDIA_TYPE_LICENSE: mf.MEDIA_TYPE_LICENSE,
    mf.MEDIA_TYPE_MESSAGES: mf.MEDIA_TYPE_MESSAGES,
    mf.MEDIA_TYPE_ADAPTER: mf.MEDIA_TYPE_ADAPTER,
    mf.MEDIA_TYPE_PROJECTOR: mf.MEDIA_TYPE_PROJECTOR,
}
# embeddings in Modelfiles, deprecated since Ollama 0.1.2, which Ollama ignores too
_IGNORED = frozenset({"application/vnd.ollama.image.embed"})
# what olla cannot use yet, and why, for the error
_NOT_YET = {
    "application/vnd.ollama.image.tensor": "safetensors tensors for Ollama's MLX engine",
    "application/vnd.ollama.image.draft": "a draft model for speculative decoding",
}


@dataclass(frozen=True)
class LibraryPull:
    """One pull from a registry: its seams (the HTTP transport, how blobs are cut in parts)."""

    ref: LibraryRef
    transport: httpx.BaseTransport | None = None
    sizes: PartSizes = PartSizes()

    def run(
        self, registry: Registry, report: Report, stop: threading.Event, downloads: Downloads
    ) -> mf.Manifest:
        """Fetch the manifest, then every blob, then write the manifest; `stop` ends it at the
        next piece (Interrupted), what was downloaded stays for the next pull."""
        client = RegistryClient(self.transport)
        try:
            report({"status": "pulling manifest"})
            manifest = usable_manifest(client.manifest(self.ref), self.ref)
            blobs = _blobs_of(manifest)
            wanted = {d: _wanted(registry, d, size) for d, size in blobs.items()}
            check_room(registry, list(wanted.values()), self.ref.name.display)
            for digest, w in wanted.items():
                self._fetch(client, registry, w, digest, report, stop, downloads)
            _check_params(registry, manifest, self.ref)
            report({"status": "writing manifest"})
            registry.write_manifest(self.ref.name, manifest)
        finally:
            client.close()
        log.info("pulled model", extra={"model": str(self.ref.name), "registry": self.ref.base_url})
        report({"status": "success"})
        return manifest

    def _fetch(
        self,
        client: RegistryClient,
        registry: Registry,
        wanted: Wanted,
        digest: str,
        report: Report,
        stop: threading.Event,
        downloads: Downloads,
    ) -> None:
        ref = self.ref

        def download(part: Path, progress: Callable[[int], None]) -> None:
            url = client.locate(ref, digest)

            def read(start: int, end: int, write: Callable[[bytes], None]) -> None:
                client.read_range(ref, url, start, end, write)

            retryable = (httpx.TransportError, ShortRead)
            try:
                PartedDownload(part, wanted.size, read, progress, stop, self.sizes, retryable).run()
            except retryable as exc:
                raise unreachable(ref, exc) from None

        def mismatch(exc: InvalidDigest) -> UpstreamError:
            return UpstreamError(
                f"blob {digest} of {ref.where} does not match its sha256 ({exc}); the download "
                "was discarded, pull again"
            )

        fetch_blob(registry, wanted, download, report, stop, downloads, mismatch)


def usable_manifest(data: bytes, ref: LibraryRef) -> mf.Manifest:
    """The registry's manifest with olla's media types; NotSupported naming a layer olla cannot
    use, UpstreamError for one it cannot read."""
    try:
        manifest = mf.Manifest.from_json(data)
    except InvalidRequest as exc:
        raise UpstreamError(f"the registry at {ref.base_url} sent {ref.where}: {exc}") from None
    layers = []
    for layer in manifest.layers:
        if layer.media_type in _IGNORED:
            continue
        media_type = LAYER_TYPES.get(layer.media_type)
        if media_type is None:
            why = _NOT_YET.get(layer.media_type, "a kind of layer olla does not know")
            raise NotSupported(
                f"{ref.name.display} has a layer of media type {layer.media_type} ({why}); "
                "olla cannot use it yet, so nothing was pulled"
            )
        layers.append(replace(layer, media_type=media_type))
    if not any(layer.media_type == mf.MEDIA_TYPE_MODEL for layer in layers):
        raise NotSupported(f"{ref.name.display} has no model layer olla can load")
    return mf.Manifest(config=manifest.config, layers=tuple(layers))


def _blobs_of(manifest: mf.Manifest) -> dict[str, int]:
    """Each blob once, by digest, with its size: the layers in order, then the config."""
    blobs: dict[str, int] = {}
    for layer in (*manifest.layers, manifest.config):
        blobs.setdefault(layer.digest, layer.size)
    return blobs


def _wanted(registry: Registry, digest: str, size: int) -> Wanted:
    part = partial_path(registry, digest)
    return Wanted(digest, size, f"pulling {digest.removeprefix('sha256:')[:12]}", part)


def _check_params(registry: Registry, manifest: mf.Manifest, ref: LibraryRef) -> None:
    """A params layer that is not a JSON object would break every later use of the model."""
    layer = manifest.layer(mf.MEDIA_TYPE_PARAMS)
    if layer is None:
        return
    try:
        params = json.loads(registry.blobs.path(layer.digest).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UpstreamError(f"the params layer of {ref.where} is not JSON ({exc})") from None
    if not isinstance(params, dict):
        raise UpstreamError(f"the params layer of {ref.where} is not a JSON object")
