"""Bridging blocking work (disk, native code) into the daemon's asyncio loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

T = TypeVar("T")
_DONE = object()


async def progress_of(
    work: Callable[[Callable[[T], None], threading.Event], Any],
) -> AsyncGenerator[T, None]:
    """Run `work(report, cancelled)` in a thread and yield what it reports; re-raise its error.

    If the consumer stops early (client gone), `cancelled` is set so the work can stop too.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancelled = threading.Event()

    def report(item: T) -> None:
        if not cancelled.is_set():
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def run() -> None:
        try:
            work(report, cancelled)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    future = loop.run_in_executor(None, run)
    try:
        while (item := await queue.get()) is not _DONE:
            yield item
    finally:
        cancelled.set()
        await asyncio.shield(future)
