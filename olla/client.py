"""HTTP client for the daemon's /api/* routes, used by the CLI, tests and scripts.

Errors come back as the same `olla.errors` classes the daemon raised (by status), with the
daemon's message, so the CLI can print them as they are.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from olla import errors
from olla.address import HostAddress

# a stream of JSON lines from the daemon or a runner
Lines = AsyncGenerator[dict[str, Any], None]


def file_digest(path: Path) -> str:
    """`sha256:<hex>` of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


class Client:
    """An async session with one olla daemon; use as `async with Client(host) as c:`."""

    def __init__(
        self, host: HostAddress, timeout: float | None = None, api_key: str | None = None
    ) -> None:
        self.host = host
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10)
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def __aenter__(self) -> Client:
        socket_path = self.host.socket_path
        connector = aiohttp.UnixConnector(path=socket_path) if socket_path else None
        self._session = aiohttp.ClientSession(
            base_url=self.host.base_url,
            connector=connector,
            timeout=self._timeout,
            headers=self._headers,
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(self, method: str, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        assert self._session is not None, "use Client as an async context manager"
        try:
            response = await self._session.request(method, path, **kwargs)
        except aiohttp.ClientConnectionError as exc:
            raise errors.DaemonUnavailable(
                f"could not connect to olla at {self.host} ({exc.__class__.__name__}); "
                "is `olla serve` running? Set OLLA_HOST to reach another address"
            ) from None
        if response.status >= 400:
            text = await response.text()
            try:
                message = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                message = text.strip() or response.reason or f"HTTP {response.status}"
            raise errors.error_from(response.status, message)
        return response

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        response = await self._request(method, path, json=body)
        async with response:
            text = await response.text()
        return json.loads(text) if text.strip() else None

    async def _stream(self, path: str, body: dict[str, Any]) -> Lines:
        response = await self._request("POST", path, json=body)
        async with response:
            async for raw in response.content:
                if not raw.strip():
                    continue
                line = json.loads(raw)
                if "error" in line:  # a stream that failed after it began
                    raise errors.OllaError(line["error"])
                yield line

    async def version(self) -> str:
        return (await self._json("GET", "/api/version"))["version"]

    async def list_models(self) -> list[dict[str, Any]]:
        return (await self._json("GET", "/api/tags"))["models"]

    async def running(self) -> list[dict[str, Any]]:
        """The loaded models (GET /api/ps)."""
        return (await self._json("GET", "/api/ps"))["models"]

    async def unload(self, model: str) -> None:
        """Unload `model` once its requests end (keep_alive 0, as `ollama stop` does)."""
        body = {"model": model, "keep_alive": 0, "stream": False}
        await self._json("POST", "/api/generate", body)

    async def show(self, model: str, verbose: bool = False) -> dict[str, Any]:
        return await self._json("POST", "/api/show", {"model": model, "verbose": verbose})

    async def copy(self, source: str, destination: str) -> None:
        await self._json("POST", "/api/copy", {"source": source, "destination": destination})

    async def delete(self, model: str) -> None:
        await self._json("DELETE", "/api/delete", {"model": model})

    def create(self, body: dict[str, Any]) -> Lines:
        """Stream the status lines of POST /api/create."""
        return self._stream("/api/create", {**body, "stream": True})

    def pull(self, model: str, insecure: bool = False) -> Lines:
        """Stream the status lines of POST /api/pull (`insecure`: a registry over plain http)."""
        body: dict[str, Any] = {"model": model, "stream": True}
        if insecure:
            body["insecure"] = True
        return self._stream("/api/pull", body)

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/embed: `embeddings`, one vector per input."""
        return await self._json("POST", "/api/embed", body)

    def chat(self, body: dict[str, Any]) -> Lines:
        return self._stream("/api/chat", {**body, "stream": True})

    def generate(self, body: dict[str, Any]) -> Lines:
        return self._stream("/api/generate", {**body, "stream": True})

    async def blob_exists(self, digest: str) -> bool:
        try:
            (await self._request("HEAD", f"/api/blobs/{digest}")).release()
        except errors.NotFound:
            return False
        return True

    async def upload_blob(self, path: Path, digest: str) -> bool:
        """Upload `path` as blob `digest` unless the daemon has it; True if it was sent."""
        if await self.blob_exists(digest):
            return False
        with path.open("rb") as f:
            response = await self._request("POST", f"/api/blobs/{digest}", data=f)
            response.release()
        return True
