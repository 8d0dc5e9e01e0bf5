"""ModelManager: which models have a runner, when they load, and when they go.

A request leases its model's runner for as long as it streams. A model (by name: two names for
one GGUF are two models, e.g. with different num_ctx) is loaded on first use;
reloaded when an option that shapes the load changes (num_ctx, num_gpu, num_thread) once no
request uses it, or when its runner died. At most `max_loaded_models` runners exist at once: a
new model takes the place of the least recently used idle one, and waits while every loaded model
is busy. Models with requests in flight are never unloaded. When the last request of a model
ends, its keep_alive starts: 0 unloads now, a negative value keeps it forever.

Requests waiting for their model, or beyond the runner's parallel sequences, are the model's
queue; past `max_queue` a request is refused with 503 and Retry-After.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olla.backends.base import Memory
from olla.backends.llama_cpp import default_flash_attention
from olla.config import Settings
from olla.errors import InvalidRequest, OllaError, Overloaded
from olla.registry.gguf_info import read_gguf_info
from olla.registry.store import ModelEntry, ResolvedModel
from olla.runtime.memory import ModelShape, estimate
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


class State(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    STOPPING = "stopping"


@dataclass(eq=False)
class LoadedModel:
    """A model's runner and what decides its lifetime."""

    key: LoadKey
    entry: ModelEntry  # the model it was loaded as, for logs and `olla ps`
    state: State = State.LOADING
    runner: RunnerClient | None = None
    active: int = 0  # leases held: requests streaming from it
    last_used: float = 0.0  # monotonic
    keep_alive: float = 300.0  # seconds after the last lease ends; negative: forever
    idle_since: float | None = None  # monotonic; None while leased or loading
    loaded_at: float = 0.0  # wall clock, for `olla ps`
    unload_requested: bool = False  # `olla stop`: unload when the last lease ends
    estimate: Memory | None = None  # from the GGUF, before the load
    actual: Memory | None = None  # what the runner reported llama.cpp allocated
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.entry.name.display

    @property
    def alive(self) -> bool:
        return self.runner is not None and self.runner.alive

    @property
    def expires_at(self) -> float | None:
        """Monotonic time it unloads at if nobody uses it; None: not while leased, or never."""
        if self.idle_since is None or self.keep_alive < 0:
            return None
        return self.idle_since + self.keep_alive


@dataclass(eq=False)
class Lease:
    """A request's hold on a loaded model: the runner stays loaded until `release`."""

    manager: ModelManager
    model: LoadedModel
    keep_alive: float
    load_seconds: float  # time this request waited for the load (0 when already loaded)
    released: bool = False

    @property
    def runner(self) -> RunnerClient:
        assert self.model.runner is not None
        return self.model.runner

    async def release(self) -> None:
        """End the lease; the model's keep_alive starts when its last lease ends."""
        if not self.released:
            self.released = True
            await self.manager._release(self)


class ModelManager:
    """Hands out leases on runners, loading and unloading models within the limits."""

    def __init__(
        self,
        settings: Settings,
        spawn: SpawnRunner = RunnerClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._spawn = spawn
        self._clock = clock
        self._models: dict[str, LoadedModel] = {}  # by model name
        self._changed = asyncio.Condition()
        self._waiting: dict[str, int] = {}  # model name -> requests waiting for it
        self._stopping: set[asyncio.Task[None]] = set()
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

    def now(self) -> float:
        """The manager's clock (monotonic seconds), which `expires_at` is measured on."""
        return self._clock()

    def keep_alive(self, value: float | None) -> float:
        """The request's keep_alive in seconds, else the daemon's."""
        return self._settings.keep_alive if value is None else value

    async def acquire(
        self, model: ResolvedModel, options: dict[str, Any], keep_alive: float | None = None
    ) -> Lease:
        """Lease `model`'s runner, loading it (and making room) first if needed.

        Raises Overloaded when the model's queue is full, ModelLoadError if it cannot load.
        """
        key = self.load_key(model, options)
        name = model.entry.name.display
        self._admit(name)
        started = self._clock()
        self._waiting[name] = self._waiting.get(name, 0) + 1
        try:
            loaded = await self._place(key, model.entry)
        finally:
            self._waiting[name] -= 1
        return Lease(self, loaded, self.keep_alive(keep_alive), self._clock() - started)

    def _admit(self, name: str) -> None:
        loaded = self._models.get(name)
        beyond = max(loaded.active - self._settings.num_parallel, 0) if loaded else 0
        queued = self._waiting.get(name, 0) + beyond
        if queued >= self._settings.max_queue:
            raise Overloaded(
                f"{queued} requests are already waiting for {name}; try again shortly "
                f"(the queue holds {self._settings.max_queue}: OLLA_MAX_QUEUE)",
                retry_after=2.0,
            )

    async def _place(self, key: LoadKey, entry: ModelEntry) -> LoadedModel:
        """The model loaded with `key` and leased (active + 1), once there is room for it."""
        name = entry.name.display
        async with self._changed:
            while True:
                loaded = self._models.get(name)
                if loaded is not None and loaded.state is State.READY and not loaded.alive:
                    log.info("%s: its runner exited; loading it again", loaded.name,
                             extra={"model": loaded.name})  # fmt: skip
                    self._unload(loaded)
                    continue
                if loaded is not None and loaded.state is State.READY and loaded.key == key:
                    self._lease(loaded)
                    return loaded
                if loaded is not None:
                    if loaded.state is State.READY and loaded.active == 0:
                        log.info("%s: load options changed; reloading", name,
                                 extra={"model": name})  # fmt: skip
                        self._unload(loaded)
                    await self._changed.wait()  # loading, stopping, or busy with other options
                    continue
                if self._num_held() >= self._settings.max_loaded_models:
                    victim = self._least_recently_used()
                    if victim is None:
                        await self._changed.wait()  # every model is busy: wait for one to idle
                        continue
                    log.info("unloading %s to make room for %s", victim.name, name,
                             extra={"model": victim.name})  # fmt: skip
                    self._unload(victim)
                    await self._changed.wait()
                    continue
                loaded = LoadedModel(key, entry, loaded_at=time.time())
                self._models[name] = loaded
                break
        try:
            loaded.estimate = await asyncio.to_thread(self._estimate, key, name)
            loaded.runner = await self._start(key, name)
            loaded.actual = await self._measure(loaded.runner, name)
        except BaseException:
            async with self._changed:
                del self._models[name]
                self._changed.notify_all()
            raise
        async with self._changed:
            loaded.state = State.READY
            self._lease(loaded)
            self._changed.notify_all()
        return loaded

    def _num_held(self) -> int:
        """Models holding memory or about to: loading, loaded, or still stopping."""
        return len(self._models)

    def _least_recently_used(self) -> LoadedModel | None:
        idle = [m for m in self._models.values() if m.state is State.READY and m.active == 0]
        return min(idle, key=lambda m: m.last_used, default=None)

    def _lease(self, loaded: LoadedModel) -> None:
        loaded.active += 1
        loaded.idle_since = None
        if loaded.timer is not None:
            loaded.timer.cancel()
            loaded.timer = None

    async def _release(self, lease: Lease) -> None:
        loaded = lease.model
        async with self._changed:
            loaded.active -= 1
            loaded.last_used = self._clock()
            loaded.keep_alive = lease.keep_alive
            if loaded.active == 0 and loaded.state is State.READY:
                self._start_keep_alive(loaded)
            self._changed.notify_all()

    def _start_keep_alive(self, loaded: LoadedModel) -> None:
        loaded.idle_since = self._clock()
        if loaded.keep_alive == 0 or loaded.unload_requested or not loaded.alive:
            self._unload(loaded)
        elif loaded.keep_alive > 0:
            loop = asyncio.get_running_loop()
            loaded.timer = loop.call_later(loaded.keep_alive, self._expire, loaded)

    def _expire(self, loaded: LoadedModel) -> None:
        loaded.timer = None
        if loaded.state is State.READY and loaded.active == 0:
            log.info("unloading %s: keep_alive of %gs is over", loaded.name, loaded.keep_alive,
                     extra={"model": loaded.name})  # fmt: skip
            self._unload(loaded)

    def _unload(self, loaded: LoadedModel) -> None:
        """Stop `loaded`'s runner in the background; it keeps its place until it has exited."""
        loaded.state = State.STOPPING
        if loaded.timer is not None:
            loaded.timer.cancel()
            loaded.timer = None
        task = asyncio.get_running_loop().create_task(self._stop(loaded))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop(self, loaded: LoadedModel) -> None:
        try:
            if loaded.runner is not None:
                await loaded.runner.stop()
        finally:
            async with self._changed:
                if self._models.get(loaded.name) is loaded:
                    del self._models[loaded.name]
                self._changed.notify_all()
            log.info("unloaded %s", loaded.name, extra={"model": loaded.name})

    async def unload(self, model: ResolvedModel) -> bool:
        """Unload `model` once its requests end (`olla stop`); False if it was not loaded."""
        async with self._changed:
            loaded = self._models.get(model.entry.name.display)
            if loaded is None or loaded.state is State.STOPPING:
                return False
            loaded.unload_requested = True
            if loaded.state is State.READY and loaded.active == 0:
                self._unload(loaded)
            return True

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

    def _estimate(self, key: LoadKey, name: str) -> Memory | None:
        try:
            shape = ModelShape.from_gguf(read_gguf_info(key.model_path))
        except OllaError as exc:
            log.warning("%s: no memory estimate: %s", name, exc, extra={"model": name})
            return None
        return estimate(
            shape,
            num_ctx=key.num_ctx,
            num_parallel=self._settings.num_parallel,
            # as the runner will load it (None: llama.cpp's choice, on where supported)
            flash_attention=default_flash_attention(key.num_gpu_layers, self._settings.kv_unified)
            is not False,
            gpu_layers=key.num_gpu_layers,
        )

    async def _measure(self, runner: RunnerClient, name: str) -> Memory | None:
        try:
            stats = await runner.call("stats")
        except OllaError as exc:
            log.warning("%s: no memory report: %s", name, exc, extra={"model": name})
            return None
        return Memory.from_json(stats.get("memory") or {})

    def loaded(self) -> list[LoadedModel]:
        """The models with a live runner, for `/api/ps`."""
        return [m for m in self._models.values() if m.state is State.READY and m.alive]

    async def close(self) -> None:
        """Stop every runner and remove their sockets' directory."""
        runners = [m.runner for m in self._models.values() if m.runner is not None]
        for loaded in self._models.values():
            if loaded.timer is not None:
                loaded.timer.cancel()
        self._models.clear()
        await asyncio.gather(*(runner.stop() for runner in runners), return_exceptions=True)
        await asyncio.gather(*self._stopping, return_exceptions=True)
        shutil.rmtree(self._socket_dir, ignore_errors=True)
