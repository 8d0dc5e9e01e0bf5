"""A fake Hugging Face Hub for tests: enough of the real HTTP protocol for `huggingface_hub`.

`FakeHub` serves, on 127.0.0.1, the routes that `huggingface_hub` 2.4 calls for model repos:

- ``GET /api/models/{repo_id}`` and ``GET /api/models/{repo_id}/revision/{rev}``
  (``HfApi.model_info`` / ``repo_info``; the first is ``main``). ``?blobs=true``, which
  ``files_metadata=True`` sends, adds ``size``, ``blobId`` and, for LFS files,
  ``lfs: {sha256, size, pointerSize}`` to each sibling;
- ``GET /api/models/{repo_id}/tree/{rev}[/{path}]?recursive=...&expand=...``
  (``list_repo_tree``, ``list_repo_files``, ``snapshot_download``);
- ``HEAD|GET /{repo_id}/resolve/{rev}/{filename}`` (``hf_hub_download``): a regular file is
  answered 200 with ``ETag`` = its git blob id; an LFS file is answered 302 to
  ``{cdn_url}/cdn/{sha256}?filename=...`` with ``X-Repo-Commit``, ``X-Linked-Etag`` (the sha256,
  quoted), ``X-Linked-Size`` and ``ETag``, like the real Hub. No ``X-Xet-*`` header nor
  ``Link: rel="xet-auth"`` is ever sent, so the library never takes its Xet path and downloads
  over plain HTTP;
- ``HEAD|GET /cdn/{sha256}`` (the "CDN"), with ``Range: bytes=N-`` / ``bytes=N-M`` support (206
  and ``Content-Range``; 416 past the end).

A repo has one commit, reachable by its hash and by the branch names in ``refs``; calling
`add_repo` again with ``add_revision=True`` gives it another (a branch with other files, as EXL2
repos keep each quantization on a branch of its own), and each route serves the files of the
revision it names.

The CDN is the same application listening on a second port: the library follows a HEAD redirect
that stays on the Hub's own origin, but stops at a redirect to another origin and reads the file's
metadata from the 302 itself, which is what happens against huggingface.co.

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and
``X-Error-Message`` headers, from which `huggingface_hub` raises `RepositoryNotFoundError`,
`RevisionNotFoundError` and `RemoteEntryNotFoundError`.

The server runs in a background thread with its own event loop, so it serves both sync code and
pytest-asyncio tests. Counters (`requests`, `bytes_served`, `bytes_served_by_file`, `in_flight`)
and faults (`drop_after`, `queue_drops`, `corrupt`, `delay_per_chunk`) apply to "file GETs": GETs
that send a file's bytes (the CDN, or ``resolve`` for a non-LFS file).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

from tests.two_port_server import TwoPortServer

#: Extensions that the Hub's default ``.gitattributes`` stores with Git LFS (a subset).
LFS_EXTENSIONS = frozenset(
    {".gguf", ".bin", ".safetensors", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack", ".npy"}
    | {".npz", ".pkl", ".pickle", ".tar", ".gz", ".zip", ".zst", ".tflite", ".model", ".ot"}
)
#: The Hub refuses non-LFS files above 10 MiB; bigger files are LFS whatever their extension.
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
#: Arbitrary but stable timestamps for the JSON answers.
_DATE = "2024-01-01T00:00:00.000Z"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_READ_BLOCK = 1024 * 1024


def git_blob_id(content: bytes) -> str:
    """The git object id (sha1) of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The Git LFS pointer file that git stores in place of an LFS file."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


@dataclass(frozen=True)
class HubFile:
    """One file of a fake repo; `source` files are read from disk in chunks, never whole."""

    path: str
    size: int
    sha256: str
    git_sha1: str
    lfs: bool
    data: bytes | None = None
    source: Path | None = None

    @property
    def pointer(self) -> bytes:
        """The LFS pointer of this file (meaningful for LFS files only)."""
        return lfs_pointer(self.sha256, self.size)

    @property
    def blob_id(self) -> str:
        """The git blob id the Hub reports: of the LFS pointer, or of the content if not LFS."""
        return git_blob_id(self.pointer) if self.lfs else self.git_sha1

    @property
    def etag(self) -> str:
        """The value (unquoted) of the ETag the Hub sends for this file."""
        return self.sha256 if self.lfs else self.git_sha1


@dataclass
class HubRepo:
    """One commit of a fake model repo, reachable by its hash and by the branch names in `refs`."""

    repo_id: str
    files: dict[str, HubFile]
    commit: str
    refs: set[str] = field(default_factory=lambda: {"main"})
    info: dict[str, Any] = field(default_factory=dict)

    def resolves(self, revision: str) -> bool:
        """Whether `revision` names this repo's commit (a branch in `refs`, or the commit hash)."""
        return revision in self.refs or revision == self.commit


def _hash_source(content: bytes | Path) -> tuple[int, str, str]:
    """(size, sha256, git sha1) of the content, streaming a Path."""
    if isinstance(content, bytes):
        return len(content), hashlib.sha256(content).hexdigest(), git_blob_id(content)
    size = content.stat().st_size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % size)
    with content.open("rb") as f:
        while block := f.read(_READ_BLOCK):
            sha256.update(block)
            sha1.update(block)
    return size, sha256.hexdigest(), sha1.hexdigest()


def _is_lfs(path: str, size: int, lfs: bool | Collection[str] | None) -> bool:
    if isinstance(lfs, bool):
        return lfs
    if lfs is not None:
        return path in lfs
    return size > LFS_SIZE_THRESHOLD or Path(path).suffix.lower() in LFS_EXTENSIONS


class FakeHub(TwoPortServer):
    """A Hugging Face Hub look-alike on a free loopback port, for `huggingface_hub` and olla tests.

    Use it as a context manager (``with FakeHub() as hub: ... hub.url``) or call `start`/`stop`.
    Point the library at it with ``HfApi(endpoint=hub.url)`` and
    ``hf_hub_download(..., endpoint=hub.url)`` (or ``HF_ENDPOINT`` for a process not yet started).

    Fault injection, for the next "file GET" (a GET that sends a file's bytes):

    - `drop_after` = N: send N body bytes, make sure they left the server, then abort the connection
      (the client sees the body end early); consumed by one GET. `queue_drops` queues several.
    - `corrupt` = True: flip the byte at offset ``size // 2`` of every file served (if in the range
      served) while the headers still announce the true sha256 and size.
    - `delay_per_chunk` = seconds to sleep after each `chunk_size` bytes, to make a download slow.
    """

    name = "FakeHub"

    def __init__(self, *, chunk_size: int = 64 * 1024) -> None:
        super().__init__()
        self.chunk_size = chunk_size
        self.corrupt = False
        self.delay_per_chunk = 0.0
        self._repos: dict[str, list[HubRepo]] = {}  # each repo's commits, the first added first
        self._blobs: dict[str, HubFile] = {}
        self._lock = threading.Lock()
        self._drops: deque[int] = deque()
        self._requests: list[tuple[str, str, str | None]] = []
        self._bytes_by_file: dict[str, int] = {}
        self._in_flight = 0

    # -- repos ---------------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path],
        *,
        lfs: bool | Collection[str] | None = None,
        refs: Collection[str] = ("main",),
        info: Mapping[str, Any] | None = None,
        add_revision: bool = False,
    ) -> str:
        """Add (or replace) a model repo and return its commit hash.

        `files` maps paths in the repo to their content, in memory or on disk (a Path is hashed
        once here, streamed, and served from disk in chunks). `lfs` says which files are stored
        with LFS: True/False for all, a collection of paths, or None for the Hub's defaults (a
        binary extension such as ``.gguf``, or more than 10 MiB). `refs` are the branch names that
        resolve to the commit; `info` is merged into the ``/api/models`` JSON (e.g.
        ``{"gguf": {...}, "tags": [...]}``).

        With `add_revision`, a repo added before is kept and gets this commit besides its others
        (`refs` move to it from the commits that had them); without it the repo is replaced.
        """
        hub_files: dict[str, HubFile] = {}
        for path, content in files.items():
            size, sha256, sha1 = _hash_source(content)
            hub_files[path] = HubFile(
                path=path,
                size=size,
                sha256=sha256,
                git_sha1=sha1,
                lfs=_is_lfs(path, size, lfs),
                data=content if isinstance(content, bytes) else None,
                source=content if isinstance(content, Path) else None,
            )
        tree = "".join(f"{p}\0{f.blob_id}\n" for p, f in sorted(hub_files.items()))
        commit = hashlib.sha1(f"{repo_id}\n{tree}".encode()).hexdigest()
        repo = HubRepo(repo_id, hub_files, commit, set(refs), dict(info or {}))
        with self._lock:
            kept = self._repos.get(repo_id, []) if add_revision else []
            for other in kept:
                other.refs -= repo.refs  # a branch names one commit
            same = [r for r in kept if r.commit == commit]  # a second branch on the same files
            if same:
                same[0].refs |= repo.refs
            self._repos[repo_id] = kept if same else [*kept, repo]
            for f in hub_files.values():
                self._blobs[f.sha256] = f
        return commit

    def commit(self, repo_id: str, revision: str | None = None) -> str:
        """The commit hash of a repo added with `add_repo`: the one `revision` names, or the
        first one added."""
        return self._revision_of(repo_id, revision).commit

    def file(self, repo_id: str, path: str, revision: str | None = None) -> HubFile:
        """The metadata (size, sha256, ...) of one file of a repo, at `revision` (as `commit`)."""
        return self._revision_of(repo_id, revision).files[path]

    def _revision_of(self, repo_id: str, revision: str | None) -> HubRepo:
        commits = self._repos[repo_id]
        found = commits[0] if revision is None else _resolve_revision(commits, revision)
        if found is None:
            raise KeyError(f"{repo_id} has no revision {revision!r}")
        return found

    # -- counters and faults -------------------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str, str | None]]:
        """Every request so far, as (method, decoded path, Range header or None); a copy."""
        with self._lock:
            return list(self._requests)

    @property
    def bytes_served(self) -> int:
        """Total body bytes sent by file GETs."""
        with self._lock:
            return sum(self._bytes_by_file.values())

    @property
    def bytes_served_by_file(self) -> dict[str, int]:
        """Body bytes sent by file GETs, per path in the repo; a copy."""
        with self._lock:
            return dict(self._bytes_by_file)

    @property
    def in_flight(self) -> int:
        """File GETs being served right now."""
        with self._lock:
            return self._in_flight

    @property
    def drop_after(self) -> int | None:
        """Body bytes the next file GET sends before the connection is aborted; None: no drop."""
        with self._lock:
            return self._drops[0] if self._drops else None

    @drop_after.setter
    def drop_after(self, value: int | None) -> None:
        with self._lock:
            self._drops.clear()
            if value is not None:
                self._drops.append(value)

    def queue_drops(self, *counts: int) -> None:
        """Drop the next ``len(counts)`` file GETs, the i-th after ``counts[i]`` body bytes."""
        with self._lock:
            self._drops.extend(counts)

    def reset_counters(self) -> None:
        """Forget the recorded requests and served bytes (faults are left as they are)."""
        with self._lock:
            self._requests.clear()
            self._bytes_by_file.clear()

    # -- lifecycle: TwoPortServer ------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._requests.append((request.method, request.path, request.headers.get("Range")))
        segments = [unquote(s) for s in request.rel_url.raw_path.split("/")[1:]]
        if request.method not in ("GET", "HEAD"):
            return _error(405, None, "Method not allowed")
        if segments[:2] == ["api", "models"] and len(segments) > 2:
            return self._api(request, segments[2:])
        if segments[:1] == ["cdn"] and len(segments) == 2:
            blob = self._blobs.get(segments[1])
            if blob is None:
                return _error(404, None, "Not found")
            return await self._serve(request, blob, {}, request.query.get("filename", blob.path))
        if "resolve" in segments[1:3]:
            return await self._resolve(request, segments)
        return _error(404, None, "Not found")

    def _find_repo(self, segments: list[str]) -> tuple[list[HubRepo] | None, list[str]]:
        """Split ``org/name/rest...`` (or ``name/rest...``) into a known repo's commits and the
        rest."""
        for n in (2, 1):
            commits = self._repos.get("/".join(segments[:n]))
            if commits is not None:
                return commits, segments[n:]
        return None, segments[2:]

    def _api(self, request: web.Request, segments: list[str]) -> web.StreamResponse:
        commits, rest = self._find_repo(segments)
        if commits is None:
            return _error(404, "RepoNotFound", "Repository not found")
        if not rest:
            revision = "main"
        elif rest[0] in ("revision", "tree") and len(rest) >= 2:
            revision = rest[1]
        else:
            return _error(404, None, "Not found")
        repo = _resolve_revision(commits, revision)
        if repo is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if rest and rest[0] == "tree":
            return self._tree(request, repo, "/".join(rest[2:]).strip("/"))
        return web.json_response(self._model_info(repo, _flag(request, "blobs")))

    def _model_info(self, repo: HubRepo, blobs: bool) -> dict[str, Any]:
        siblings: list[dict[str, Any]] = []
        for f in repo.files.values():
            sibling: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                sibling.update(size=f.size, blobId=f.blob_id)
                if f.lfs:
                    sibling["lfs"] = {
                        "sha256": f.sha256,
                        "size": f.size,
                        "pointerSize": len(f.pointer),
                    }
            siblings.append(sibling)
        author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        info: dict[str, Any] = {
            "_id": repo.commit[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": author,
            "sha": repo.commit,
            "lastModified": _DATE,
            "createdAt": _DATE,
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(f.size for f in repo.files.values()),
        }
        info.update(repo.info)
        return info

    def _tree(self, request: web.Request, repo: HubRepo, folder: str) -> web.StreamResponse:
        recursive, expand = _flag(request, "recursive"), _flag(request, "expand")
        prefix = f"{folder}/" if folder else ""
        folders: set[str] = set()
        for path in repo.files:
            parts = path.split("/")[:-1]
            folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        if folder and folder not in folders:
            return _error(404, "EntryNotFound", f"{folder} does not exist on {repo.commit}")
        entries: list[dict[str, Any]] = []
        for path in sorted(folders | set(repo.files)):
            if not path.startswith(prefix):
                continue
            if not recursive and "/" in path[len(prefix) :]:
                continue
            entry: dict[str, Any]
            if path in repo.files:
                f = repo.files[path]
                entry = {"type": "file", "oid": f.blob_id, "size": f.size, "path": path}
                if f.lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
            else:
                oid = hashlib.sha1(f"{repo.commit}:{path}".encode()).hexdigest()
                entry = {"type": "directory", "oid": oid, "size": 0, "path": path}
            if expand:
                entry["lastCommit"] = {"id": repo.commit, "title": "Upload", "date": _DATE}
            entries.append(entry)
        return web.json_response(entries)

    async def _resolve(self, request: web.Request, segments: list[str]) -> web.StreamResponse:
        at = segments.index("resolve", 1)
        commits = self._repos.get("/".join(segments[:at]))
        if commits is None or len(segments) < at + 3:
            return _error(404, "RepoNotFound", "Repository not found")
        revision, path = segments[at + 1], "/".join(segments[at + 2 :])
        repo = _resolve_revision(commits, revision)
        if repo is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        f = repo.files.get(path)
        commit = {"X-Repo-Commit": repo.commit}
        if f is None:
            return _error(404, "EntryNotFound", "Entry not found", commit)
        if not f.lfs:
            return await self._serve(request, f, commit, f.path)
        location = f"{self.cdn_url}/cdn/{f.sha256}?filename={quote(f.path, safe='')}"
        headers = {
            **commit,
            "Location": location,
            "X-Linked-Etag": f'"{f.sha256}"',
            "X-Linked-Size": str(f.size),
            "ETag": f'"{f.sha256}"',
            "Accept-Ranges": "bytes",
        }
        return web.Response(status=302, headers=headers, text=f"Found. Redirecting to {location}")

    async def _serve(
        self, request: web.Request, f: HubFile, extra: dict[str, str], name: str
    ) -> web.StreamResponse:
        """Answer a HEAD or (ranged) GET with the file's bytes, applying the counters and faults."""
        start, end = 0, f.size
        header = request.headers.get("Range")
        status = 200
        base = Path(name).name
        headers = {
            **extra,
            "ETag": f'"{f.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(base)}; filename=\"{base}\";",
        }
        if header is not None:
            match = _RANGE.fullmatch(header.strip())
            if match is None or match.groups() == ("", ""):
                return _error(416, None, "Invalid range", {"Content-Range": f"bytes */{f.size}"})
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last) + 1, f.size) if last else f.size
            else:
                start = max(f.size - int(last), 0)
            if start >= f.size or start >= end:
                return _error(
                    416, None, "Range not satisfiable", {"Content-Range": f"bytes */{f.size}"}
                )
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start
        await response.prepare(request)
        if request.method == "HEAD":
            await response.write_eof()
            return response
        with self._lock:
            drop = self._drops.popleft() if self._drops else None
            self._in_flight += 1
        try:
            limit = end if drop is None else min(end, start + drop)
            await self._stream(response, f, name, start, limit)
            if limit < end:
                await _abort(request)
                return response
        finally:
            with self._lock:
                self._in_flight -= 1
        await response.write_eof()
        return response

    async def _stream(
        self, response: web.StreamResponse, f: HubFile, name: str, start: int, end: int
    ) -> None:
        middle = f.size // 2
        handle = f.source.open("rb") if f.source is not None else None
        try:
            if handle is not None:
                handle.seek(start)
            position = start
            while position < end:
                n = min(self.chunk_size, end - position)
                if handle is not None:
                    chunk = handle.read(n)
                else:
                    assert f.data is not None
                    chunk = f.data[position : position + n]
                if not chunk:
                    raise OSError(f"{f.source} shrank while being served")
                if self.corrupt and position <= middle < position + len(chunk):
                    flipped = bytearray(chunk)
                    flipped[middle - position] ^= 0xFF
                    chunk = bytes(flipped)
                await response.write(chunk)
                position += len(chunk)
                with self._lock:
                    self._bytes_by_file[name] = self._bytes_by_file.get(name, 0) + len(chunk)
                if self.delay_per_chunk:
                    await asyncio.sleep(self.delay_per_chunk)
        finally:
            if handle is not None:
                handle.close()


def _resolve_revision(commits: list[HubRepo], revision: str) -> HubRepo | None:
    """The commit of a repo that `revision` (a branch name or a commit hash) names, if any."""
    return next((repo for repo in commits if repo.resolves(revision)), None)


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


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true")


def _error(
    status: int, code: str | None, message: str, extra: Mapping[str, str] | None = None
) -> web.Response:
    """An error the way the Hub sends it: ``X-Error-Code``/``X-Error-Message`` and a JSON body."""
    headers = dict(extra or {})
    if code is not None:
        headers["X-Error-Code"] = code
    headers["X-Error-Message"] = message
    return web.Response(
        status=status,
        headers=headers,
        text=json.dumps({"error": message}),
        content_type="application/json",
    )
