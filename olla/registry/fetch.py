"""What every pull source shares: one download per file at a time, the stop signal, room on the
disk, and a downloaded file checked and moved into the blob store.

A source (Hugging Face in `olla.registry.pull`, an Ollama-protocol registry in
`olla.registry.library_pull`) only says how to fill a partial file; `fetch_blob` does the rest:
a blob already stored is not fetched again, two pulls of one file share one download, what a
stopped pull got stays in `<models>/partial/` for the next one, a full disk is a 507, and a file
whose sha256 is not the one announced is discarded (a bad copy must not be resumed from).
"""

from __future__ import annotations

import errno
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olla.errors import Interrupted, InvalidDigest, OllaError, StorageError
from olla.registry.store import Registry
from olla.units import format_size

Report = Callable[[dict[str, Any]], None]
# fills a partial file, resuming from what it holds; calls its argument with the bytes so far
Download = Callable[[Path, Callable[[int], None]], None]


@dataclass
class Downloads:
    """One download per file at a time, across every pull of the daemon (two model names can
    name one file), and the signal that stops a pull between chunks."""

    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def holding(self, key: str, stop: threading.Event) -> Iterator[None]:
        """Hold `key`'s lock, waiting for the pull that has it; Interrupted once `stop` is set."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        while not lock.acquire(timeout=0.2):
            check_stop(stop)
        try:
            yield
        finally:
            lock.release()


def check_stop(stop: threading.Event) -> None:
    """Interrupted once `stop` is set: every client left, or the daemon is stopping."""
    if stop.is_set():
        raise Interrupted("the pull was stopped; pull again to go on from what was downloaded")


@dataclass(frozen=True)
class Wanted:
    """A file a pull wants in the store."""

    digest: str | None  # `sha256:<hex>` when announced before the download
    size: int
    label: str  # its status line: `pulling <12 hex>`
    part: Path  # where it downloads


def partial_path(registry: Registry, digest: str) -> Path:
    """The partial file of a blob known by its digest, shared by every source and name."""
    return registry.root / "partial" / f"sha256-{digest.removeprefix('sha256:')}.part"


def check_room(registry: Registry, wanted: list[Wanted], what: str) -> None:
    """StorageError (507) before a byte is fetched when the rest of the pull cannot fit."""
    needed = 0
    for w in wanted:
        if w.digest is not None and registry.blobs.exists(w.digest):
            continue
        have = w.part.stat().st_size if w.part.exists() else 0
        needed += max(w.size - have, 0)
    registry.root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(registry.root).free
    if needed > free:
        raise StorageError(
            f"not enough disk space to pull {what}: it needs {format_size(needed)} more, "
            f"{format_size(free)} is free on {registry.root}; free space or set OLLA_MODELS to "
            "a larger disk (the store was not changed)"
        )


def fetch_blob(
    registry: Registry,
    wanted: Wanted,
    download: Download,
    report: Report,
    stop: threading.Event,
    downloads: Downloads,
    mismatch: Callable[[InvalidDigest], OllaError],
) -> str:
    """The digest of `wanted` in the store: already there, or downloaded by `download`, checked
    and moved in (pinned until a manifest refers to it). `mismatch` words the error for a file
    whose sha256 is not `wanted.digest`."""
    digest = wanted.digest

    def progress(completed: int) -> None:
        line = {"status": wanted.label, "digest": digest or "", "total": wanted.size}
        report({**line, "completed": min(completed, wanted.size)})

    def stored_already() -> bool:
        if digest is None or not registry.blobs.exists(digest):
            return False
        registry.pin(digest)
        progress(wanted.size)
        return True

    if stored_already():
        return digest  # type: ignore[return-value]  # stored_already checked it
    check_stop(stop)
    progress(0)
    with downloads.holding(str(wanted.part), stop):
        if stored_already():  # another pull (another name for this file) just stored it
            return digest  # type: ignore[return-value]
        try:
            wanted.part.parent.mkdir(parents=True, exist_ok=True)
            download(wanted.part, progress)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageError(
                    f"the disk is full while pulling {wanted.label.removeprefix('pulling ')} "
                    f"({exc.strerror}); free space and pull again: it goes on from what was "
                    "downloaded (the store was not changed)"
                ) from None
            raise
        report({"status": "verifying sha256 digest"})
        try:
            stored = registry.blobs.adopt(wanted.part, expected_digest=digest)
        except InvalidDigest as exc:
            discard(wanted.part)  # a bad copy must not be resumed from
            raise mismatch(exc) from None
        registry.pin(stored)  # not pruned before the manifest refers to it
    return stored


def discard(part: Path) -> None:
    """Remove a partial file and what a download in parts keeps beside it."""
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".json").unlink(missing_ok=True)
