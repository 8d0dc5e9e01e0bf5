"""Pulls in flight: one download per model, however many clients ask for it at once.

A pull runs as a task of the daemon, not of the request that started it: a second request for
the same model follows the same task (its status lines so far, then the rest). When the last
client following it goes away (Ctrl-C), the pull stops at the next chunk, as Ollama's does; what
it downloaded stays in `<models>/partial/` and the next pull goes on from there. Status lines are
Ollama's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from olla.asyncutil import progress_of
from olla.registry.fetch import Downloads
from olla.registry.library_names import DEFAULT_REGISTRY, LibraryRef, PullSource, resolve_pull
from olla.registry.library_pull import LibraryPull
from olla.registry.names import ModelName
from olla.registry.pull import run_pull
from olla.registry.pull_plan import hub_settings, plan_pull
from olla.registry.store import Registry

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Pull:
    """One model's pull: its status lines so far, and how it ended."""

    lines: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None
    followers: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


class Pulls:
    """Starts pulls and lets any number of requests follow each one."""

    def __init__(self, registry: Registry, registry_url: str = DEFAULT_REGISTRY) -> None:
        self._registry = registry
        self._registry_url = registry_url  # OLLA_REGISTRY: where names without a host go
        self._running: dict[ModelName, _Pull] = {}
        self._downloads = Downloads()

    async def follow(
        self, text: str, insecure: bool = False
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The status lines of pulling model `text`, joining a pull already under way;
        `insecure` allows plain http to a registry that is not on loopback."""
        name, origin = resolve_pull(text, self._registry_url, insecure)
        pull = self._running.get(name)
        if pull is not None and pull.stop.is_set():
            await self._finished(pull)  # stopping: a fresh pull resumes from what it left
            pull = self._running.get(name)
        if pull is None:
            pull = _Pull()
            self._running[name] = pull
            pull.task = asyncio.get_running_loop().create_task(self._run(name, origin, pull))
        else:
            log.info("joining the pull under way", extra={"model": str(name)})
        pull.followers += 1
        try:
            async for line in self._lines(pull):
                yield line
        finally:
            pull.followers -= 1
            if pull.followers == 0 and not pull.done:
                log.info("every client left: stopping the pull", extra={"model": str(name)})
                pull.stop.set()

    @staticmethod
    async def _lines(pull: _Pull) -> AsyncGenerator[dict[str, Any], None]:
        seen = 0
        while True:
            async with pull.changed:
                while len(pull.lines) == seen and not pull.done:
                    await pull.changed.wait()
                new, seen = pull.lines[seen:], len(pull.lines)
                finished, error = pull.done, pull.error
            for line in _squash(new):
                yield line
            if finished and seen == len(pull.lines):
                if error is not None:
                    raise error
                return

    async def _run(self, name: ModelName, origin: PullSource, pull: _Pull) -> None:
        endpoint, token = hub_settings()

        def work(report: Any, cancelled: threading.Event) -> None:
            if isinstance(origin, LibraryRef):
                LibraryPull(origin).run(self._registry, report, pull.stop, self._downloads)
                return
            report({"status": "pulling manifest"})
            plan = plan_pull(name, origin, endpoint, token)
            run_pull(plan, self._registry, report, endpoint, token, pull.stop, self._downloads)

        try:
            async for line in progress_of(work):
                async with pull.changed:
                    pull.lines.append(line)
                    pull.changed.notify_all()
        except Exception as exc:  # handed to every follower
            pull.error = exc
            if pull.stop.is_set():
                log.info("pull stopped: %s", exc, extra={"model": str(name)})
        finally:
            if self._running.get(name) is pull:
                del self._running[name]
            async with pull.changed:
                pull.done = True
                pull.changed.notify_all()

    @staticmethod
    async def _finished(pull: _Pull) -> None:
        if pull.task is not None:
            await asyncio.gather(asyncio.shield(pull.task), return_exceptions=True)

    async def close(self) -> None:
        """Stop the pulls under way at their next chunk and wait for them (partials stay)."""
        pulls = list(self._running.values())
        for pull in pulls:
            pull.stop.set()
        for pull in pulls:
            await self._finished(pull)


def _squash(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of several progress lines for one file in a row, only the last (a late follower
    need not replay every 0.1 s tick)."""
    out: list[dict[str, Any]] = []
    for line in lines:
        if out and "completed" in line and out[-1].get("status") == line.get("status"):
            out[-1] = line
        else:
            out.append(line)
    return out
