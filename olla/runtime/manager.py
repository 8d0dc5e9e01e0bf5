"""ModelManager: a runner process per model, started on first use and kept.

Memory budgets, eviction, keep_alive and the bounded queue are the model-manager issue's work;
here a model is loaded on demand, reloaded when an option that shapes the load changes (num_ctx,
num_gpu, num_thread), and restarted if its runner died.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olla.config import Settings
from olla.errors import InvalidRequest
from olla.registry.store import ResolvedModel
from olla.runtime.protocol import RunnerSpec
from olla.runtime.runner_client import RunnerClient

log = logging.getLogger(__name__)

SpawnRunner = Callable[[RunnerSpec, str], RunnerClient]


@dataclass(frozen=True)
class LoadKey:
    """What makes two loads the same: the model file and the options that shape the load."""

    model_path: str
    num_ctx: int
    num_gpu_layers: int
    num_threads: int | None


class ModelManager:
    """Hands out the runner for a model, starting it when needed."""

    def __init__(self, settings: Settings, spawn: SpawnRunner = RunnerClient) -> None:
        self._settings = settings
        self._spawn = spawn
        self._runners: dict[str, tuple[LoadKey, RunnerClient]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._socket_dir = Path(tempfile.mkdtemp(prefix="olla-runners-"))
        self._count = 0

    def load_key(self, model: ResolvedModel, options: dict[str, Any]) -> LoadKey:
        if model.model_path is None:
            raise InvalidRequest(f"model {model.entry.name.display} has no model file")
        num_ctx = int(options.get("num_ctx") or self._settings.context_length)
        return LoadKey(
            model_path=str(model.model_path),
            num_ctx=num_ctx,
            num_gpu_layers=int(options.get("num_gpu") or 0),
            num_threads=int(options["num_thread"]) if options.get("num_thread") else None,
        )

    async def runner_for(self, model: ResolvedModel, options: dict[str, Any]) -> RunnerClient:
        """The live runner for `model` with these load options; loads or reloads as needed."""
        key = self.load_key(model, options)
        name = model.entry.name.display
        async with self._locks.setdefault(key.model_path, asyncio.Lock()):
            current = self._runners.get(key.model_path)
            if current is not None:
                loaded_key, runner = current
                if loaded_key == key and runner.alive:
                    return runner
                reason = "its runner exited" if not runner.alive else "load options changed"
                log.info("reloading %s: %s", name, reason, extra={"model": name})
                await runner.stop()
                del self._runners[key.model_path]
            runner = await self._start(key, name)
            self._runners[key.model_path] = (key, runner)
            return runner

    async def _start(self, key: LoadKey, name: str) -> RunnerClient:
        self._count += 1
        spec = RunnerSpec(
            model_path=key.model_path,
            socket_path=str(self._socket_dir / f"runner-{self._count}.sock"),
            num_ctx=key.num_ctx,
            num_parallel=self._settings.num_parallel,
            kv_unified=self._settings.kv_unified,
            num_threads=key.num_threads,
            num_gpu_layers=key.num_gpu_layers,
            debug=self._settings.debug,
        )
        runner = self._spawn(spec, name)
        log.info("loading %s", name, extra={"model": name, "num_ctx": key.num_ctx})
        await runner.start()
        log.info("loaded %s", name, extra={"model": name, "pid": runner.pid})
        return runner

    def loaded(self) -> list[tuple[LoadKey, RunnerClient]]:
        """The loaded runners, for `/api/ps`."""
        return list(self._runners.values())

    async def close(self) -> None:
        """Stop every runner and remove their sockets' directory."""
        runners = [runner for _, runner in self._runners.values()]
        self._runners.clear()
        await asyncio.gather(*(runner.stop() for runner in runners), return_exceptions=True)
        shutil.rmtree(self._socket_dir, ignore_errors=True)
