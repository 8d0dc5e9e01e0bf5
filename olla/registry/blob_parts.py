"""A blob downloaded in parts, several at once, into one partial file that a later pull resumes.

As Ollama's `server/download.go`: a blob is cut in about 16 parts of 100 MB to 1 GB each, and a
few parts download at once, each a ranged GET on its own connection (one connection to a CDN is
often slower than the line). A blob smaller than two parts is one part: a plain download that
appends to its file, resumed from the file's size (so a file that Hugging Face's pull left half
done is resumed too). With several parts, `<part>.json` beside the file keeps how far each got,
written before the first byte and after each piece, so a stopped pull goes on from there. A
connection that breaks mid-part is retried from where it broke.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from olla.registry.fetch import check_stop

log = logging.getLogger(__name__)

# reads bytes [start, end) of the blob, handing each piece to the callback; raises when cut
ReadRange = Callable[[int, int, Callable[[bytes], None]], None]
_SAVE_EVERY_S = 1.0
_PROGRESS_EVERY_S = 0.1


@dataclass(frozen=True)
class PartSizes:
    """How a blob is cut: Ollama's 16 parts of 100 MB to 1 GB; `at_once` parts at a time."""

    count: int = 16
    min_size: int = 100 * 1000 * 1000
    max_size: int = 1000 * 1000 * 1000
    at_once: int = 4
    tries: int = 4  # attempts of one part in a row that get no byte, before the pull fails

    def split(self, total: int) -> list[tuple[int, int]]:
        """(offset, size) of each part; one part for a blob under two parts' minimum."""
        if total < 2 * self.min_size:
            return [(0, total)]
        size = min(max(total // self.count, self.min_size), self.max_size)
        return [(offset, min(size, total - offset)) for offset in range(0, total, size)]


class PartedDownload:
    """Fills `path` with a blob of `total` bytes, part by part, resuming what it holds."""

    def __init__(
        self,
        path: Path,
        total: int,
        read: ReadRange,
        progress: Callable[[int], None],
        stop: threading.Event,
        sizes: PartSizes,
        retryable: tuple[type[BaseException], ...],
    ) -> None:
        self._path = path
        self._state = path.with_name(path.name + ".json")
        self._total = total
        self._read = read
        self._progress = progress
        self._stop = stop
        self._sizes = sizes
        self._retryable = retryable
        self._parts = sizes.split(total)
        self._lock = threading.Lock()
        self._failed = threading.Event()  # a part failed: the others stop too
        self._done = self._resume()
        self._saved_at = self._reported_at = 0.0

    def run(self) -> None:
        """Download what is missing; the file then holds the blob (not yet verified)."""
        with open(self._path, "ab"):
            pass  # exists, so that each part can open it for writing at its offset
        if len(self._parts) > 1:
            self._save()
        self._progress(sum(self._done))
        todo = [i for i, (_, size) in enumerate(self._parts) if self._done[i] < size]
        if len(todo) == 1:
            self._run_part(todo[0])
        elif todo:
            log.info("downloading %s in %d parts", self._path.name, len(todo))
            with ThreadPoolExecutor(min(self._sizes.at_once, len(todo))) as pool:
                futures = [pool.submit(self._run_part, i) for i in todo]
            errors = [e for f in futures if (e := f.exception()) is not None]
            errors.sort(key=lambda e: isinstance(e, _Abandoned))  # the cause first
            if errors:
                raise errors[0]
        self._state.unlink(missing_ok=True)
        self._progress(self._total)

    def _resume(self) -> list[int]:
        """How far each part got: from the state file, else the file's size (one stream). A
        file written in parts that the state does not describe is started again: its size
        says nothing of the holes in it."""
        have = self._path.stat().st_size if self._path.exists() else 0
        if self._state.exists():
            saved = self._saved_parts()
            if saved is not None:
                return saved
            self._path.write_bytes(b"")
            self._state.unlink()
            have = 0
        if have > self._total:
            self._path.unlink()  # not a prefix of this blob: start again
            have = 0
        return [min(max(have - offset, 0), size) for offset, size in self._parts]

    def _saved_parts(self) -> list[int] | None:
        """Each part's bytes from the state file, if it describes these parts."""
        try:
            saved = json.loads(self._state.read_text())
            if saved["total"] == self._total and saved["parts"] == [list(p) for p in self._parts]:
                done = zip(saved["done"], self._parts, strict=True)
                return [min(int(d), size) for d, (_, size) in done]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: start again
        return None

    def _run_part(self, i: int) -> None:
        offset, size = self._parts[i]
        fd = os.open(self._path, os.O_WRONLY)
        try:
            fruitless = 0
            while self._done[i] < size:
                before = self._done[i]
                try:
                    self._read(offset + before, offset + size, lambda b: self._write(fd, i, b))
                except self._retryable as exc:
                    fruitless = 0 if self._done[i] > before else fruitless + 1
                    if fruitless >= self._sizes.tries:
                        raise
                    log.info(
                        "part %d of %s: %s; going on from byte %d",
                        i,
                        self._path.name,
                        exc,
                        offset + self._done[i],
                    )
                    self._wait(0.25 * 2**fruitless)
        except BaseException:
            self._failed.set()
            raise
        finally:
            os.close(fd)
            if len(self._parts) > 1:
                self._save(force=True)

    def _write(self, fd: int, i: int, data: bytes) -> None:
        check_stop(self._stop)
        if self._failed.is_set():
            raise _Abandoned("another part failed")
        offset = self._parts[i][0] + self._done[i]
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
        with self._lock:
            self._done[i] += len(data)
            now = time.monotonic()
            report = now - self._reported_at >= _PROGRESS_EVERY_S
            if report:
                self._reported_at = now
            done = sum(self._done)
        if report:
            self._progress(done)
        if len(self._parts) > 1:
            self._save()

    def _wait(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            check_stop(self._stop)

    def _save(self, force: bool = False) -> None:
        """Write how far each part got (often enough to resume, seldom enough to be cheap)."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._saved_at < _SAVE_EVERY_S:
                return
            self._saved_at = now
            state = {"total": self._total, "parts": self._parts, "done": list(self._done)}
            temp = self._state.with_name(self._state.name + ".tmp")
            temp.write_text(json.dumps(state))
            os.replace(temp, self._state)


class _Abandoned(Exception):
    """A part stops because another failed; the other's error is the one raised."""
