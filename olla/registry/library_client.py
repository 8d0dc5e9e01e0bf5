"""The HTTP side of Ollama's registry protocol (a Docker registry's v2 paths), as Ollama's pull
speaks it (`server/images.go`, `server/download.go`).

A manifest is `GET /v2/<namespace>/<model>/manifests/<tag>` with the Docker manifest media type
in `Accept`. A blob is `GET /v2/<namespace>/<model>/blobs/<digest>`, which the registry answers
with a redirect to wherever it keeps the bytes (Ollama's: a CDN): redirects on the registry's own
host are followed, and the first to another host gives the address the bytes are read from, in
ranges. Blocking (httpx): a pull runs in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import httpx

from olla import __version__
from olla.errors import NotFound, OllaError, UpstreamError
from olla.registry.library_names import LibraryRef
from olla.registry.manifests import MEDIA_TYPE_MANIFEST

log = logging.getLogger(__name__)

MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_MAX_REDIRECTS = 10
# no read for this long is a stalled connection (Ollama's downloadStallTimeout is 30 s)
_TIMEOUT = httpx.Timeout(30.0, connect=15.0)


class ShortRead(Exception):
    """A blob host ended a range before its last byte (a cut connection): resumable."""


class RegistryClient:
    """GETs against one Ollama-protocol registry and the hosts it redirects to; `transport` is
    the seam for tests (httpx's default otherwise)."""

    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(
            timeout=_TIMEOUT,
            follow_redirects=False,
            transport=transport,
            headers={"User-Agent": f"olla/{__version__}", "Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        self._client.close()

    def manifest(self, ref: LibraryRef) -> bytes:
        """The manifest's bytes; NotFound for a model or tag the registry does not have."""
        headers = {"Accept": f"{MEDIA_TYPE_MANIFEST}, {MEDIA_TYPE_OCI_MANIFEST}"}
        url = ref.manifest_url()
        try:
            for _ in range(_MAX_REDIRECTS):
                response = self._client.get(url, headers=headers)
                if not response.is_redirect:
                    break
                url = urljoin(url, response.headers["location"])
        except httpx.HTTPError as exc:
            raise unreachable(ref, exc) from None
        if response.status_code == 404:
            raise NotFound(
                f"pull model manifest: file does not exist: the registry at {ref.base_url} "
                f"has no model {ref.name.display}"
            )
        _raise_for_status(response, ref, "its manifest")
        return response.content

    def locate(self, ref: LibraryRef, digest: str) -> str:
        """Where a blob's bytes are read from: the blob's address after the registry's own
        redirects, or the first redirect to another host (which gets no credentials)."""
        url = ref.blob_url(digest)
        home = urlsplit(url).netloc
        try:
            for _ in range(_MAX_REDIRECTS):
                with self._client.stream("GET", url) as response:
                    if not response.is_redirect:
                        _raise_for_status(response, ref, f"blob {digest}")
                        return url  # served by the registry itself: ranges from there
                    url = urljoin(url, response.headers["location"])
                if urlsplit(url).netloc != home:
                    return url
        except httpx.HTTPError as exc:
            raise unreachable(ref, exc) from None
        raise UpstreamError(f"the registry at {ref.base_url} redirected blob {digest} too often")

    def read_range(
        self, ref: LibraryRef, url: str, start: int, end: int, write: Callable[[bytes], None]
    ) -> None:
        """Bytes `start` to `end` (exclusive) of the blob at `url`, handed to `write` as they
        come; ShortRead when the connection ends before `end`, httpx's errors for others."""
        headers = {"Range": f"bytes={start}-{end - 1}"}
        with self._client.stream("GET", url, headers=headers) as response:
            _raise_for_status(response, ref, "a blob")
            skip = start if response.status_code == 200 else 0  # the host ignored the range
            position = start
            for chunk in response.iter_raw():  # as it arrives: a cut keeps what came
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                chunk = chunk[: end - position]
                if chunk:
                    write(chunk)
                    position += len(chunk)
                if position >= end:
                    return
        if position < end:
            raise ShortRead(f"the blob host sent {position - start} of {end - start} bytes")


def _raise_for_status(response: httpx.Response, ref: LibraryRef, what: str) -> None:
    if response.status_code < 400:
        return
    if response.status_code in (401, 403):
        raise UpstreamError(
            f"the registry at {ref.base_url} refused {what} of {ref.name.display} "
            f"({response.status_code}): olla pulls public models only, without signing in"
        )
    response.read()
    raise UpstreamError(
        f"the registry at {ref.base_url} answered {response.status_code} for {what} of "
        f"{ref.name.display}: {response.text[:300]}"
    )


def unreachable(ref: LibraryRef, exc: BaseException) -> OllaError:
    """The error for a registry (or its blob host) that cannot be reached or hung up."""
    return UpstreamError(
        f"cannot reach the registry at {ref.base_url} ({type(exc).__name__}: {exc}); check "
        "the network connection (or OLLA_REGISTRY), then pull again: it goes on from what it has"
    )
