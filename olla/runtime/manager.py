"""ModelManager: which models have a runner, where they sit, when they load, and when they go.

A request leases its model's runner for as long as it streams. A model (by name: two names for
one GGUF are two models, e.g. with different num_ctx) is loaded on first use; reloaded when an
option that shapes the load changes (num_ctx, num_gpu, num_thread, KV cache type, flash
attention) once no request uses it, or when its runner died. A num_ctx nobody set is chosen at
placement (`olla.runtime.auto_context`), and requests without one take whatever was chosen.

Before a load the model is placed (`olla.runtime.placement`) against what olla could have of
the machine: its RAM and VRAM budgets, less what other programs hold. Then room is made: while
the model does not fit beside the loaded ones (in memory, or within `max_loaded_models`), the
least recently used idle model is unloaded; while only busy models are left, the newcomer waits.
Models with requests in flight are never unloaded. A model that cannot fit even alone is refused
with a message that says what it needs. When the last request of a model ends, its keep_alive
starts: 0 unloads now, a negative value keeps it forever.

Requests waiting for their model, or beyond the runner's parallel sequences, are the model's
queue; past `max_queue` a request is refused with 503 and Retry-After, and so is one that has
waited `queue_timeout` for room (the runner's engine bounds the wait for a sequence alike). A
load in progress is not such a wait: it keeps its own limit.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from olla.config import Settings
from olla.errors import OllaError, Overloaded
from olla.memory import Memory
from olla.registry.gguf_info import read_gguf_info
from olla.registry.store import ModelEntry, ResolvedModel
from olla.runtime import auto_context
from olla.runtime.capacity import Capacity
from olla.runtime.estimate import DirShape, ModelShape, Shape, with_adapters, with_projector
from olla.runtime.load_key import LoadKey, load_key
from olla.runtime.loaded import Cancellable, LoadedModel, State
from olla.runtime.placement import Placement, place_model
from olla.runtime.queue_wait import RETRY_AFTER, CallLater, QueueWait
from olla.runtime.resources import Resources, Snapshot, SystemResources
from olla.runtime.runner_client import RunnerClient
from olla.runtime.runner_specs import load_plan, runner_spec
from olla.wire.spec import RunnerSpec

log = logging.getLogger(__name__)

SpawnRunner = Callable[[RunnerSpec, str], RunnerClient]


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
        resources: Resources | None = None,
        shape_of: Callable[[str], Shape] | None = None,
        call_later: CallLater | None = None,
    ) -> None:
        self._settings = settings
        self._call_later = call_later
        self._spawn = spawn
        self._clock = clock
        self._resources = resources or SystemResources()
        self._shape_of = shape_of or _read_shape
        self._shapes: dict[str, Shape] = {}  # by model path
        self._models: dict[str, LoadedModel] = {}  # by model name
        self._changed = asyncio.Condition()
        self._waiting: dict[str, int] = {}  # model name -> requests waiting for it
        self._stopping: set[asyncio.Task[None]] = set()
        self._wakers: set[asyncio.Task[None]] = set()  # queue timers waking the waiters
        self._socket_dir = Path(tempfile.mkdtemp(prefix="olla-runners-"))
        self._count = 0

    def load_key(self, model: ResolvedModel, options: dict[str, Any]) -> LoadKey:
        """The load a request asks for; InvalidRequest names a bad option."""
        return load_key(self._settings, model, options)

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
                retry_after=RETRY_AFTER,
            )

    async def _place(self, key: LoadKey, entry: ModelEntry) -> LoadedModel:
        """The model loaded with `key` and leased (active + 1), once there is room for it.

        Overloaded once it has waited `queue_timeout` for busy models to make room.
        """
        wait = QueueWait(entry.name.display, self._clock(), self._settings.queue_timeout)
        try:
            return await self._place_within(key, entry, wait)
        finally:
            wait.cancel()

    async def _place_within(self, key: LoadKey, entry: ModelEntry, wait: QueueWait) -> LoadedModel:
        name = entry.name.display
        shape = await self._shape(key)
        waited = False
        async with self._changed:
            while True:
                loaded = self._models.get(name)
                if loaded is not None and loaded.state is State.READY and not loaded.alive:
                    log.info(
                        "%s: its runner exited; loading it again",
                        loaded.name,
                        extra={"model": loaded.name},
                    )
                    self._unload(loaded)
                    continue
                if loaded is not None and loaded.state is State.READY and loaded.key.serves(key):
                    self._lease(loaded)
                    return loaded
                if loaded is not None:
                    if loaded.state is State.READY and loaded.active == 0:
                        log.info("%s: load options changed; reloading", name, extra={"model": name})
                        self._unload(loaded)
                    # its own load in progress is not a queue wait; stopping, or busy with
                    # other options, is
                    loading = loaded.state is State.LOADING and loaded.key.serves(key)
                    await self._wait(None if loading else wait)
                    continue
                snapshot = await asyncio.to_thread(self._resources.snapshot)
                capacity = self._capacity(snapshot)
                chosen, placement, why = self._placement(name, key, shape, capacity)
                if capacity.fits(placement):
                    break
                victim = self._least_recently_used()
                if capacity.fits(placement, stopped=True):
                    pass  # enough is on its way out: wait for it
                elif victim is not None:
                    log.info(
                        "unloading %s to make room for %s",
                        victim.name,
                        name,
                        extra={"model": victim.name},
                    )
                    self._unload(victim)
                elif not waited:
                    waited = True
                    log.info(
                        "%s waits for room: every model in its way is busy",
                        name,
                        extra={"model": name},
                    )
                await self._wait(wait)  # for a model to stop, or a busy one to idle
            loaded = LoadedModel(chosen, entry, loaded_at=time.time(), placement=placement)
            self._models[name] = loaded
        log.info("placing %s: %s%s", name, placement.describe(), why, extra={"model": name})
        try:
            loaded.runner = await self._start(chosen, name, placement)
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

    async def _wait(self, wait: QueueWait | None) -> None:
        """Wait for a change (the condition held); Overloaded once `wait` is over."""
        if wait is not None:
            wait.check(self._clock())
            wait.arm(self._clock(), self._timer, self._wake)
        await self._changed.wait()

    def _wake(self) -> None:
        """Wake the waiters, from a timer (outside the condition's lock)."""
        task = asyncio.get_running_loop().create_task(self._notify())
        self._wakers.add(task)
        task.add_done_callback(self._wakers.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _timer(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        call_later = self._call_later or asyncio.get_running_loop().call_later
        return call_later(delay, callback)

    async def _shape(self, key: LoadKey) -> Shape:
        shape = self._shapes.get(key.model_path)
        if shape is None:
            shape = await asyncio.to_thread(self._shape_of, key.model_path)
            self._shapes[key.model_path] = shape
        if key.adapter_paths and isinstance(shape, ModelShape):  # their weights count too
            shape = await asyncio.to_thread(with_adapters, shape, key.adapter_paths)
        if key.projector_path and isinstance(shape, ModelShape):  # and a vision projector's
            shape = await asyncio.to_thread(with_projector, shape, key.projector_path)
        return shape

    def _capacity(self, snapshot: Snapshot) -> Capacity:
        return Capacity(self._settings, snapshot, list(self._models.values()))

    def _placement(
        self, name: str, key: LoadKey, shape: Shape, capacity: Capacity
    ) -> tuple[LoadKey, Placement, str]:
        """Where `key` goes, against all olla could have (as if its other models were unloaded);
        an automatic num_ctx is chosen here (the key with it, and why, for the log).

        Raises InsufficientMemory when it cannot fit even then. Otherwise it fits once the other
        models are gone, so unloading idle ones and waiting for busy ones always ends.
        """
        rooms = capacity.gpu_rooms()
        why = ""
        if key.auto_ctx:
            choice, placement = auto_context.choose(
                capacity.snapshot.gpus,
                shape,
                lambda num_ctx: self._place_at(replace(key, num_ctx=num_ctx), shape, rooms),
                capacity.fits_alone,
            )
            key, why = replace(key, num_ctx=choice.num_ctx), f"; {choice.describe()}"
        else:
            placement = self._place_at(key, shape, rooms)
        capacity.check_alone(name, key.num_ctx, key.backend, placement)
        return key, placement, why

    def _place_at(self, key: LoadKey, shape: Shape, rooms: list[int]) -> Placement:
        plan = load_plan(self._settings, key, on_gpu=True)
        cpu_plan = load_plan(self._settings, key, on_gpu=False)
        return place_model(shape, plan, cpu_plan, rooms, key.num_gpu)

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
            loaded.timer = self._timer(loaded.keep_alive, lambda: self._expire(loaded))

    def _expire(self, loaded: LoadedModel) -> None:
        loaded.timer = None
        if loaded.state is State.READY and loaded.active == 0:
            log.info(
                "unloading %s: keep_alive of %gs is over",
                loaded.name,
                loaded.keep_alive,
                extra={"model": loaded.name},
            )
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

    async def _start(self, key: LoadKey, name: str, placement: Placement) -> RunnerClient:
        self._count += 1
        socket_path = str(self._socket_dir / f"runner-{self._count}.sock")
        spec = runner_spec(self._settings, key, placement, socket_path, name)
        runner = self._spawn(spec, name)
        log.info("loading %s", name, extra={"model": name, "num_ctx": key.num_ctx})
        await runner.start()
        log.info("loaded %s", name, extra={"model": name, "pid": runner.pid})
        return runner

    async def _measure(self, runner: RunnerClient, name: str) -> Memory | None:
        try:
            stats = await runner.call("stats")
        except OllaError as exc:
            log.warning("%s: no memory report: %s", name, exc, extra={"model": name})
            return None
        return Memory.from_json(stats.get("memory") or {})

    def waiting(self) -> dict[str, int]:
        """Requests waiting for each model (to load, or for a free sequence)."""
        return {name: count for name, count in self._waiting.items() if count}

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


def _read_shape(model_path: str) -> Shape:
    if Path(model_path).is_dir():
        return DirShape.from_directory(Path(model_path))
    return ModelShape.from_gguf(read_gguf_info(model_path))
