"""Content-addressed blob store, in Ollama's layout: `<models>/blobs/sha256-<64 hex>`.

A blob becomes visible only by an atomic rename of a fully written, fsynced temp file whose name
(`.tmp-<random>`) never looks like a blob, so a crash at any point leaves either the old state or
the complete blob, never a truncated one under a digest name. Synchronous: the daemon calls it in
a worker thread.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from olla.errors import BlobNotFound, InvalidDigest, StorageError
from olla.units import format_size

CHUNK_SIZE = 1 << 20
TEMP_PREFIX = ".tmp-"
_DIGEST_RE = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
_BLOB_NAME_RE = re.compile(r"sha256-[0-9a-f]{64}")
# EDQUOT is missing on some platforms; a quota hit is "disk full" to the user either way.
_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


class Sink(Protocol):
    """What a writer writes to; the seam that lets tests simulate a full or read-only disk."""

    def write(self, data: bytes, /) -> object: ...
    def flush(self) -> None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


Opener = Callable[[Path], Sink]
# bytes free on the file system that holds a path
DiskFree = Callable[[Path], int]


def _open_exclusive(path: Path) -> Sink:
    # "x": never clobber an existing file, even on a (very unlikely) random-name collision.
    return open(path, "xb")


def _disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


def parse_digest(s: str) -> str:
    """`sha256:<hex>` or `sha256-<hex>` (64 hex digits, any case) → canonical `sha256:<hex>`."""
    # fullmatch, not match: "$" would accept a trailing newline, and nothing else may follow.
    m = _DIGEST_RE.fullmatch(s) if isinstance(s, str) else None
    if m is None:
        raise InvalidDigest(f"invalid digest {s!r}: expected 'sha256:' followed by 64 hex digits")
    return "sha256:" + m.group(1).lower()


def digest_filename(digest: str) -> str:
    """The blob's file name: `sha256-<hex>` (a ':' is not allowed in file names on Windows)."""
    return parse_digest(digest).replace(":", "-", 1)


def storage_error(exc: OSError, what: str, where: Path) -> Exception:
    """Turn a disk-full or read-only error into a StorageError that says where; else `exc`."""
    if exc.errno in _FULL:
        return StorageError(f"disk full while writing {what} to {where}: free space and retry")
    target = exc.filename or where
    if exc.errno == errno.EROFS:
        return StorageError(f"cannot write {what} to {target}: the file system is read-only")
    if exc.errno == errno.EACCES:
        return StorageError(
            f"cannot write {what} to {target}: permission denied (read-only for this user?)"
        )
    return exc


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable: without this a power cut can undo it."""
    if os.name == "nt":
        return  # Windows cannot open a directory as a file; NTFS journals renames itself
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems (e.g. some FUSE ones) cannot fsync a directory; the data is synced.
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


class BlobWriter:
    """Streams one blob into a temp file, hashing as it goes; `commit()` makes it visible."""

    def __init__(self, store: BlobStore, temp_path: Path, sink: Sink, expected: str | None):
        self._store = store
        self._temp = temp_path
        self._sink: Sink | None = sink
        self._expected = expected
        self._hash = hashlib.sha256()
        self._size = 0
        self._digest: str | None = None

    @property
    def size(self) -> int:
        return self._size

    def write(self, chunk: bytes) -> None:
        sink = self._require_open()
        try:
            sink.write(chunk)
        except OSError as exc:
            self.abort()
            raise storage_error(exc, "blob", self._store.root) from exc
        # Hash only what the sink accepted, so digest and file content cannot diverge.
        self._hash.update(chunk)
        self._size += len(chunk)

    def commit(self) -> str:
        """Flush, fsync, check the digest, rename into place, fsync the directory."""
        if self._digest is not None:
            return self._digest
        sink = self._require_open()
        digest = "sha256:" + self._hash.hexdigest()
        try:
            sink.flush()
            os.fsync(sink.fileno())
            self._sink = None
            sink.close()
            if self._expected is not None and digest != self._expected:
                self.abort()
                raise InvalidDigest(f"digest mismatch: expected {self._expected}, got {digest}")
            final = self._store.path(digest)
            if final.is_file() and final.stat().st_size == self._size:
                # Identical content is stored once. (A same-named file of another size can only
                # be damage done outside olla, so it is replaced below instead.)
                self._temp.unlink(missing_ok=True)
            else:
                os.replace(self._temp, final)
                fsync_dir(self._store.root)
        except OSError as exc:
            self.abort()
            raise storage_error(exc, "blob", self._store.root) from exc
        self._digest = digest
        return digest

    def abort(self) -> None:
        """Drop the temp file; safe to call twice, and a no-op after a successful commit."""
        if self._digest is not None:
            return
        sink, self._sink = self._sink, None
        if sink is not None:
            try:
                sink.close()
            except OSError:
                pass  # closing a file we are about to delete: its error changes nothing
        self._temp.unlink(missing_ok=True)

    def _require_open(self) -> Sink:
        if self._sink is None:
            raise ValueError("blob writer is closed (already committed or aborted)")
        return self._sink

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._digest is None:
            self.abort()


class BlobStore:
    """The `<models>/blobs` directory; `opener` opens temp files and `disk_free` measures free
    space (seams for tests)."""

    def __init__(
        self, root: Path, opener: Opener = _open_exclusive, disk_free: DiskFree = _disk_free
    ) -> None:
        self.root = root
        self._opener = opener
        self._disk_free = disk_free

    def check_room(self, size: int) -> None:
        """StorageError (507) if a blob of `size` bytes cannot fit on the store's disk, so that
        an upload too large is refused before its first byte, as a pull is."""
        where = self.root
        while not where.exists() and where != where.parent:
            where = where.parent  # the store is made on the first write: measure its disk
        free = self._disk_free(where)
        if size > free:
            raise StorageError(
                f"not enough disk space for a blob of {format_size(size)}: {format_size(free)} "
                f"is free on {self.root}; free space or set OLLA_MODELS to a larger disk"
            )

    def path(self, digest: str) -> Path:
        # parse_digest admits only 64 hex digits, so the name can never leave root.
        return self.root / digest_filename(digest)

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"blob {parse_digest(digest)} not found") from None

    def writer(self, expected_digest: str | None = None) -> BlobWriter:
        """A writer into a fresh temp file; check `expected_digest` (if given) on commit."""
        expected = parse_digest(expected_digest) if expected_digest is not None else None
        temp = self.root / f"{TEMP_PREFIX}{secrets.token_hex(16)}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            sink = self._opener(temp)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise storage_error(exc, "blob", self.root) from exc
        return BlobWriter(self, temp, sink, expected)

    def put_bytes(self, data: bytes, expected_digest: str | None = None) -> str:
        expected = parse_digest(expected_digest) if expected_digest is not None else None
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected is not None and expected != digest:
            raise InvalidDigest(f"digest mismatch: expected {expected}, got {digest}")
        if self.exists(digest) and self.size(digest) == len(data):
            return digest  # already stored: skip the temp file and the fsyncs
        with self.writer(digest) as w:
            w.write(data)
            return w.commit()

    def put_file(self, src: Path, expected_digest: str | None = None) -> str:
        """Copy `src` in, streaming 1 MiB at a time (model files are many GB)."""
        with open(src, "rb") as f, self.writer(expected_digest) as w:
            while chunk := f.read(CHUNK_SIZE):
                w.write(chunk)
            return w.commit()

    def adopt(self, src: Path, expected_digest: str | None = None) -> str:
        """Move `src` in after hashing it: no second copy of a many-GB download.

        `src` stays where it is if its digest is not `expected_digest` (InvalidDigest), and is
        copied instead of moved when it lies on another file system.
        """
        expected = parse_digest(expected_digest) if expected_digest is not None else None
        h = hashlib.sha256()
        with open(src, "rb") as f:
            while chunk := f.read(CHUNK_SIZE):
                h.update(chunk)
            os.fsync(f.fileno())
        digest = "sha256:" + h.hexdigest()
        if expected is not None and digest != expected:
            raise InvalidDigest(f"digest mismatch: expected {expected}, got {digest}")
        final = self.path(digest)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if final.is_file() and final.stat().st_size == src.stat().st_size:
                src.unlink()
                return digest
            os.replace(src, final)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return self.put_file(src, expected_digest=digest)
            raise storage_error(exc, "blob", self.root) from exc
        fsync_dir(self.root)
        return digest

    def delete(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def digests(self) -> list[str]:
        """Canonical digests of the stored blobs, sorted; temp files and strays are skipped."""
        return sorted(
            "sha256:" + e.name[len("sha256-") :]
            for e in self._entries()
            if _BLOB_NAME_RE.fullmatch(e.name) and e.is_file()
        )

    def verify(self, digest: str) -> bool:
        """Re-hash the blob; False if its content no longer matches its name."""
        canonical = parse_digest(digest)
        h = hashlib.sha256()
        with self.open(canonical) as f:
            while chunk := f.read(CHUNK_SIZE):
                h.update(chunk)
        return "sha256:" + h.hexdigest() == canonical

    def remove_stale_temp(self, older_than_s: float = 3600) -> int:
        """Delete temp files left by crashed writers. A live writer keeps its mtime fresh."""
        cutoff = time.time() - older_than_s
        removed = 0
        for e in self._entries():
            if not e.name.startswith(TEMP_PREFIX):
                continue
            try:
                if e.is_file(follow_symlinks=False) and e.stat().st_mtime <= cutoff:
                    os.unlink(e.path)
                    removed += 1
            except FileNotFoundError:
                pass  # another sweeper (or its writer's abort) got there first
        return removed

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(f"blob {parse_digest(digest)} not found") from None

    def _entries(self) -> list[os.DirEntry[str]]:
        try:
            return list(os.scandir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return []  # nothing written yet: the directory appears on the first write
