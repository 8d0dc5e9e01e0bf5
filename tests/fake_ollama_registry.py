"""A fake Ollama registry for tests: enough of the real HTTP protocol for Ollama's pull and olla's.

`FakeOllamaRegistry` serves, on 127.0.0.1, what `ollama pull` asks registry.ollama.ai for:

- ``GET|HEAD /v2/{namespace}/{model}/manifests/{tag}``: the manifest (``Content-Type`` its media
  type, ``Docker-Content-Digest``), or 404 with a Docker registry error body
  (``MANIFEST_UNKNOWN``), as the real one answers an unknown model or tag;
- ``GET|HEAD /v2/{namespace}/{model}/blobs/{digest}``: a 307 to the "CDN", as the real registry
  redirects to its storage; 404 ``BLOB_UNKNOWN`` for a digest it does not have;
- ``GET|HEAD /blobs/{digest}`` on the CDN, a second port (another origin), with ``Range:
  bytes=N-`` / ``bytes=N-M`` (206 and ``Content-Range``; 416 past the end).

A model is added with its layers (media type, then bytes or a file read in chunks, never whole);
the config blob and the manifest are made as Ollama makes them. The server runs in a background
thread with its own event loop, so it serves both sync code and pytest-asyncio tests.

Counters (`requests`, `bytes_served`, `bytes_served_by_digest`) and faults (`drop_after`,
`queue_drops`, `corrupt`, `delay_per_chunk`) apply to blob GETs on the CDN.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.two_port_server import TwoPortServer

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL = "application/vnd.ollama.image.model"
TEMPLATE = "application/vnd.ollama.image.template"
PARAMS = "application/vnd.ollama.image.params"
SYSTEM = "application/vnd.ollama.image.system"
LICENSE = "application/vnd.ollama.image.license"
PROJECTOR = "application/vnd.ollama.image.projector"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_READ_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class Blob:
    """One blob: its digest and size, and its bytes or the file they are read from."""

    digest: str
    size: int
    data: bytes | None = None
    source: Path | None = None


def make_blob(content: bytes | Path) -> Blob:
    """A blob of `content`, hashed (a file in chunks)."""
    if isinstance(content, bytes):
        return Blob(f"sha256:{hashlib.sha256(content).hexdigest()}", len(content), data=content)
    h = hashlib.sha256()
    with content.open("rb") as f:
        while block := f.read(_READ_BLOCK):
            h.update(block)
    return Blob(f"sha256:{h.hexdigest()}", content.stat().st_size, source=content)


def _split(name: str) -> tuple[str, str]:
    """`[namespace/]model[:tag]` → ("namespace/model", tag), Ollama's defaults filled in."""
    repo, _, tag = name.partition(":")
    return (repo if "/" in repo else f"library/{repo}"), tag or "latest"


class FakeOllamaRegistry(TwoPortServer):
    """An Ollama registry look-alike on a free loopback port, its blobs on a second one.

    Use it as a context manager (``with FakeOllamaRegistry() as reg: ... reg.url``) or call
    `start`/`stop`. Fault injection, for the next blob GET on the CDN:

    - `drop_after` = N: send N body bytes, let them leave, then abort the connection (the client
      sees the body end early); consumed by one GET. `queue_drops` queues several.
    - `corrupt` = True: flip the byte at offset ``size // 2`` of every blob served (if in range).
    - `delay_per_chunk` = seconds to sleep after each `chunk_size` bytes.
    """

    name = "FakeOllamaRegistry"

    def __init__(self, *, chunk_size: int = 64 * 1024) -> None:
        super().__init__()
        self.chunk_size = chunk_size
        self.corrupt = False
        self.delay_per_chunk = 0.0
        self._manifests: dict[tuple[str, str], bytes] = {}
        self._blobs: dict[str, Blob] = {}
        self._lock = threading.Lock()
        self._drops: deque[int] = deque()
        self._requests: list[tuple[str, str, str, str | None]] = []
        self._bytes_by_digest: dict[str, int] = {}

    # -- models ---------------------------------------------------------------------------------

    def add_model(
        self, name: str, layers: list[tuple[str, bytes | Path]], family: str = "llama"
    ) -> dict[str, Any]:
        """Serve `name` (`[namespace/]model[:tag]`) with these layers; returns its manifest."""
        entries = []
        for media_type, content in layers:
            blob = make_blob(content)
            self._blobs[blob.digest] = blob
            entries.append({"mediaType": media_type, "digest": blob.digest, "size": blob.size})
        config = {
            "model_format": "gguf",
            "model_family": family,
            "model_families": [family],
            "model_type": "135M",
            "file_type": "Q4_1",
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [e["digest"] for e in entries]},
        }
        config_blob = make_blob(json.dumps(config).encode())
        self._blobs[config_blob.digest] = config_blob
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": CONFIG_TYPE,
                "digest": config_blob.digest,
                "size": config_blob.size,
            },
            "layers": entries,
        }
        self._manifests[_split(name)] = json.dumps(manifest, indent=3).encode()
        return manifest

    def digest(self, name: str, media_type: str) -> str:
        """The digest of `name`'s layer of `media_type`."""
        manifest = json.loads(self._manifests[_split(name)])
        return next(e["digest"] for e in manifest["layers"] if e["mediaType"] == media_type)

    # -- counters and faults --------------------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str, str, str | None]]:
        """Every request so far: ("registry" or "cdn", method, path, Range or None); a copy."""
        with self._lock:
            return list(self._requests)

    @property
    def bytes_served(self) -> int:
        """Body bytes sent by blob GETs on the CDN."""
        with self._lock:
            return sum(self._bytes_by_digest.values())

    @property
    def bytes_served_by_digest(self) -> dict[str, int]:
        with self._lock:
            return dict(self._bytes_by_digest)

    @property
    def drop_after(self) -> int | None:
        with self._lock:
            return self._drops[0] if self._drops else None

    @drop_after.setter
    def drop_after(self, value: int | None) -> None:
        with self._lock:
            self._drops.clear()
            if value is not None:
                self._drops.append(value)

    def queue_drops(self, *counts: int) -> None:
        """Drop the next ``len(counts)`` blob GETs, the i-th after ``counts[i]`` body bytes."""
        with self._lock:
            self._drops.extend(counts)

    def reset_counters(self) -> None:
        with self._lock:
            self._requests.clear()
            self._bytes_by_digest.clear()

    # -- lifecycle: TwoPortServer, and -----------------------------------------------------

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, for names with an explicit host."""
        return self.url.removeprefix("http://")

    # -- HTTP -----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        where = "cdn" if self._on_cdn(request) else "registry"
        with self._lock:
            self._requests.append(
                (where, request.method, request.path, request.headers.get("Range"))
            )
        if request.method not in ("GET", "HEAD"):
            return _error(405, "UNSUPPORTED", "method not allowed")
        segments = request.path.strip("/").split("/")
        if where == "cdn":
            blob = self._blobs.get(segments[-1]) if segments[:1] == ["blobs"] else None
            if blob is None or len(segments) != 2:
                return _error(404, "BLOB_UNKNOWN", "blob unknown to registry")
            return await self._serve(request, blob)
        if segments == ["v2"]:
            return web.json_response({})
        if len(segments) == 5 and segments[0] == "v2" and segments[3] == "manifests":
            data = self._manifests.get((f"{segments[1]}/{segments[2]}", segments[4]))
            if data is None:
                return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            headers = {
                "Content-Type": MANIFEST_TYPE,
                "Docker-Content-Digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
            }
            return web.Response(body=data, headers=headers)
        if len(segments) == 5 and segments[0] == "v2" and segments[3] == "blobs":
            if segments[4] not in self._blobs:
                return _error(404, "BLOB_UNKNOWN", "blob unknown to registry")
            location = f"{self.cdn_url}/blobs/{segments[4]}"
            return web.Response(status=307, headers={"Location": location})
        return _error(404, "NAME_UNKNOWN", "repository name not known to registry")

    async def _serve(self, request: web.Request, blob: Blob) -> web.StreamResponse:
        """A HEAD or (ranged) GET of a blob's bytes, with the counters and faults."""
        start, end, status = 0, blob.size, 200
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        header = request.headers.get("Range")
        if header is not None:
            match = _RANGE.fullmatch(header.strip())
            if match is None or match.groups() == ("", ""):
                return _error(416, "RANGE", "invalid range")
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last) + 1, blob.size) if last else blob.size
            else:
                start = max(blob.size - int(last), 0)
            if start >= blob.size or start >= end:
                return _error(416, "RANGE", "range not satisfiable")
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start
        await response.prepare(request)
        if request.method == "HEAD":
            await response.write_eof()
            return response
        with self._lock:
            drop = self._drops.popleft() if self._drops else None
        limit = end if drop is None else min(end, start + drop)
        await self._stream(response, blob, start, limit)
        if limit < end:
            await _abort(request)
            return response
        await response.write_eof()
        return response

    async def _stream(self, response: web.StreamResponse, blob: Blob, start: int, end: int) -> None:
        middle = blob.size // 2
        handle = blob.source.open("rb") if blob.source is not None else None
        try:
            if handle is not None:
                handle.seek(start)
            position = start
            while position < end:
                n = min(self.chunk_size, end - position)
                if handle is not None:
                    chunk = handle.read(n)
                else:
                    assert blob.data is not None
                    chunk = blob.data[position : position + n]
                if self.corrupt and position <= middle < position + len(chunk):
                    flipped = bytearray(chunk)
                    flipped[middle - position] ^= 0xFF
                    chunk = bytes(flipped)
                await response.write(chunk)
                position += len(chunk)
                with self._lock:
                    served = self._bytes_by_digest.get(blob.digest, 0)
                    self._bytes_by_digest[blob.digest] = served + len(chunk)
                if self.delay_per_chunk:
                    await asyncio.sleep(self.delay_per_chunk)
        finally:
            if handle is not None:
                handle.close()


async def _abort(request: web.Request) -> None:
    """Let the bytes written so far leave the process, then cut the connection mid-body."""
    transport = request.transport
    if transport is None:
        return
    for _ in range(5000):  # at most ~5 s
        if transport.is_closing() or transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.001)
    transport.abort()


def _error(status: int, code: str, message: str) -> web.Response:
    """An error as a Docker registry sends it: ``{"errors": [{"code", "message"}]}``."""
    body = {"errors": [{"code": code, "message": message, "detail": None}]}
    return web.json_response(body, status=status)
