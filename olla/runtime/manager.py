"""ModelManager: which models have a runner, where they sit, when they load, and when they go.

A request leases its model's runner for as long as it streams. A model (by name: two names for
one GGUF are two models, e.g. with different num_ctx) is loaded on first use; reloaded when an
option that shapes the load changes (num_ctx, num_gpu, num_thread, KV cache type, flash
attention) once no request uses it, or when its runner died.

Before a load the model is placed (`olla.runtime.placement`) against what olla could have of
the machine: its RAM and VRAM budgets, less what other programs hold. Then room is made: while
the model does not fit beside the loaded ones (in memory, or within `max_loaded_models`), the
least recently used idle model is unloaded; while only busy models are left, the newcomer waits.
Models with requests in flight are never unloaded. A model that cannot fit even alone is refused
with a message that says what it needs. When the last request of a model ends, its keep_alive
starts: 0 unloads now, a negative value keeps it forever.

Requests waiting for their model, or beyond the runner's parallel sequences, are the model's
queue; past `max_queue` a request is refused with 503 and Retry-After.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olla.backends.choice import EXLLAMAV2, LLAMA_CPP, check_exllamav2
from olla.config import Settings, parse_cache_type, parse_switch
from olla.errors import InsufficientMemory, InvalidRequest, OllaError, Overloaded
from olla.memory import Memory
from olla.registry.gguf_info import read_gguf_info
from olla.registry.model_dir import DIRECTORY_FORMATS
from olla.registry.store import ModelEntry, ResolvedModel
from olla.runtime.estimate import DirShape, ModelShape, Shape
from olla.runtime.placement import LoadPlan, Placement, place, place_directory
from olla.runtime.protocol import RunnerSpec
from olla.runtime.resources import Gpu, Resources, Snapshot, SystemResources
from olla.runtime.runner_client import RunnerClient
from olla.units import format_size

log = logging.getLogger(__name__)
MAX_NUM_CTX = 1 << 20  # beyond any model's training: surely a typo, not a memory question
MAX_THREADS = 256  # or the CPU count if larger: more threads than that only fail to start

SpawnRunner = Callable[[RunnerSpec, str], RunnerClient]

# llama.cpp's KV cache on the CPU: bf16 measured no faster than f16 here (docs/benchmarks.md),
# and f16 keeps more mantissa bits, so f16 on both.
CPU_CACHE_TYPE = "f16"
GPU_CACHE_TYPE = "f16"


@dataclass(frozen=True)
class LoadKey:
    """What makes two loads the same: the model file and the options that shape the load."""

    model_path: str
    num_ctx: int
    num_gpu: int | None  # layers on the GPU as asked; None: as many as fit
    num_threads: int | None
    cache_type: str | None  # None: f16 on a GPU, CPU_CACHE_TYPE on the CPU
    flash_attention: bool | None  # None: llama.cpp's choice
    backend: str = LLAMA_CPP  # by the model's format: llama.cpp, or exllamav2 for directories


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
    placement: Placement | None = None  # where it goes and the estimate, before the load
    actual: Memory | None = None  # what the runner reported llama.cpp allocated
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.entry.name.display

    @property
    def alive(self) -> bool:
        return self.runner is not None and self.runner.alive

    @property
    def estimate(self) -> Memory | None:
        return self.placement.memory if self.placement else None

    @property
    def ram(self) -> int:
        """RAM it holds (or will), as reserved for it: the estimate."""
        return self.placement.ram if self.placement else 0

    def vram(self, device: int) -> int:
        """Memory it holds (or will) on GPU `device`."""
        placement = self.placement
        return placement.vram if placement is not None and placement.gpu == device else 0

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
        resources: Resources | None = None,
        shape_of: Callable[[str], Shape] | None = None,
    ) -> None:
        self._settings = settings
        self._spawn = spawn
        self._clock = clock
        self._resources = resources or SystemResources()
        self._shape_of = shape_of or _read_shape
        self._shapes: dict[str, Shape] = {}  # by model path
        self._models: dict[str, LoadedModel] = {}  # by model name
        self._changed = asyncio.Condition()
        self._waiting: dict[str, int] = {}  # model name -> requests waiting for it
        self._stopping: set[asyncio.Task[None]] = set()
        self._socket_dir = Path(tempfile.mkdtemp(prefix="olla-runners-"))
        self._count = 0

    def load_key(self, model: ResolvedModel, options: dict[str, Any]) -> LoadKey:
        """The load a request asks for; InvalidRequest names a bad option."""
        if model.model_path is None:
            raise InvalidRequest(f"model {model.entry.name.display} has no model file")
        num_ctx = int(options.get("num_ctx") or self._settings.context_length)
        if not 1 <= num_ctx <= MAX_NUM_CTX:
            raise InvalidRequest(f'option "num_ctx" must be from 1 to {MAX_NUM_CTX}, not {num_ctx}')
        num_gpu = options.get("num_gpu")
        num_threads = int(options["num_thread"]) if options.get("num_thread") else None
        most = max(MAX_THREADS, os.cpu_count() or 1)
        if num_threads is not None and not 1 <= num_threads <= most:
            raise InvalidRequest(f'option "num_thread" must be from 1 to {most}, not {num_threads}')
        try:
            cache_type = parse_cache_type(options.get("kv_cache_type", ""))
            flash_attention = parse_switch(options.get("flash_attention"))
        except ValueError as exc:
            raise InvalidRequest(f"options: {exc}") from None
        backend = LLAMA_CPP
        if model.config.model_format in DIRECTORY_FORMATS:
            backend = EXLLAMAV2
            check_exllamav2(model.entry.name.display, model.config.model_format)
        return LoadKey(
            backend=backend,
            model_path=str(model.model_path),
            num_ctx=num_ctx,
            # Ollama's num_gpu: layers to offload; -1 (or absent) lets olla choose
            num_gpu=None if num_gpu is None or int(num_gpu) < 0 else int(num_gpu),
            num_threads=num_threads,
            cache_type=cache_type or self._settings.kv_cache_type,
            flash_attention=self._settings.flash_attention
            if flash_attention is None
            else flash_attention,
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
        shape = await self._shape(key.model_path)
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
                if loaded is not None and loaded.state is State.READY and loaded.key == key:
                    self._lease(loaded)
                    return loaded
                if loaded is not None:
                    if loaded.state is State.READY and loaded.active == 0:
                        log.info("%s: load options changed; reloading", name, extra={"model": name})
                        self._unload(loaded)
                    await self._changed.wait()  # loading, stopping, or busy with other options
                    continue
                snapshot = await asyncio.to_thread(self._resources.snapshot)
                placement = self._placement(name, key, shape, snapshot)
                if self._fits(placement, snapshot):
                    break
                victim = self._least_recently_used()
                if self._fits(placement, snapshot, stopped=True):
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
                await self._changed.wait()  # for a model to stop, or a busy one to idle
            loaded = LoadedModel(key, entry, loaded_at=time.time(), placement=placement)
            self._models[name] = loaded
        log.info("placing %s: %s", name, placement.describe(), extra={"model": name})
        try:
            loaded.runner = await self._start(key, name, placement)
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

    async def _shape(self, model_path: str) -> Shape:
        shape = self._shapes.get(model_path)
        if shape is None:
            shape = await asyncio.to_thread(self._shape_of, model_path)
            self._shapes[model_path] = shape
        return shape

    def _load_plan(self, key: LoadKey, on_gpu: bool) -> LoadPlan:
        cache_type = key.cache_type or (GPU_CACHE_TYPE if on_gpu else CPU_CACHE_TYPE)
        flash = self._flash_attention(key, cache_type)
        return LoadPlan(key.num_ctx, self._settings.num_parallel, cache_type, flash is not False)

    def _flash_attention(self, key: LoadKey, cache_type: str) -> bool | None:
        """As asked, else llama.cpp's choice (None: on where supported); a quantized V cache
        needs it on in llama.cpp."""
        if key.flash_attention is not None:
            return key.flash_attention
        return True if cache_type.startswith("q") else None

    def _kv_unified(self, on_gpu: bool) -> bool:
        """As set, else one pool on a GPU: llama.cpp computes a batch of prompts of different
        lengths in one pass only then (a stream each: a pass per length; docs/gpu.md)."""
        unified = self._settings.kv_unified
        return on_gpu if unified is None else unified

    def _placement(self, name: str, key: LoadKey, shape: Shape, snapshot: Snapshot) -> Placement:
        """Where `key` goes, against all olla could have (as if its other models were unloaded).

        Raises InsufficientMemory when it cannot fit even then. Otherwise it fits once the other
        models are gone, so unloading idle ones and waiting for busy ones always ends.
        """
        rooms = [self._gpu_capacity(gpu.index, snapshot, alone=True) for gpu in snapshot.gpus]
        if isinstance(shape, DirShape):
            placement = place_directory(shape, self._load_plan(key, on_gpu=True), rooms)
            self._check_fits_alone(name, key, placement, snapshot)
            return placement
        placement = place(shape, self._load_plan(key, on_gpu=True), rooms, key.num_gpu)
        if not placement.gpu_layers:  # the CPU's cache type and attention may differ
            placement = place(shape, self._load_plan(key, on_gpu=False), [], 0)
        self._check_fits_alone(name, key, placement, snapshot)
        return placement

    def _ram_capacity(self, snapshot: Snapshot, alone: bool, stopped: bool = False) -> int:
        """RAM olla could have: its budget, less what other programs hold. `alone`: as if olla's
        own models were unloaded; else what is left beside them (`stopped`: once the models
        now stopping have exited)."""
        return self._capacity(
            self._settings.ram_budget.of(snapshot.ram_total),
            snapshot.ram_available,
            lambda m: m.ram,
            alone,
            stopped,
        )

    def _gpu_capacity(
        self, device: int, snapshot: Snapshot, alone: bool, stopped: bool = False
    ) -> int:
        """As `_ram_capacity`, for GPU `device` and the VRAM budget."""
        gpu = _gpu(snapshot, device)
        budget = self._settings.vram_budget.of(gpu.total)
        return self._capacity(budget, gpu.free, lambda m: m.vram(device), alone, stopped)

    def _capacity(
        self,
        budget: int,
        free: int,
        size: Callable[[LoadedModel], int],
        alone: bool,
        stopped: bool,
    ) -> int:
        by_state = {state: 0 for state in State}
        for m in self._models.values():
            by_state[m.state] += size(m)
        # `free` was read from the machine: models still loading have not taken theirs yet
        allocated = by_state[State.READY] + by_state[State.STOPPING]
        if alone:
            return min(budget, free + allocated)
        held = sum(by_state.values())
        freed = by_state[State.STOPPING] if stopped else 0
        return min(budget - held + freed, free + freed - by_state[State.LOADING])

    def _fits(self, placement: Placement, snapshot: Snapshot, stopped: bool = False) -> bool:
        """Whether `placement` fits beside the models held now (`stopped`: once the models now
        stopping have exited), in memory and within max_loaded_models."""
        held = sum(1 for m in self._models.values() if not stopped or m.state is not State.STOPPING)
        if held >= self._settings.max_loaded_models:
            return False
        if placement.ram > self._ram_capacity(snapshot, alone=False, stopped=stopped):
            return False
        device = placement.gpu
        return device is None or placement.vram <= self._gpu_capacity(
            device, snapshot, alone=False, stopped=stopped
        )

    def _check_fits_alone(
        self, name: str, key: LoadKey, placement: Placement, snapshot: Snapshot
    ) -> None:
        ram = self._ram_capacity(snapshot, alone=True)
        memory = placement.memory
        if placement.ram > ram:
            budget = self._settings.ram_budget
            raise InsufficientMemory(
                f"{name} needs {format_size(placement.ram)} of RAM with num_ctx {key.num_ctx} "
                f"for {self._settings.num_parallel} parallel sequences (weights "
                f"{format_size(memory.weights)}, KV cache {format_size(memory.kv_cache)}), but "
                f"olla has {format_size(max(ram, 0))} (OLLA_RAM_BUDGET="
                f"{budget.describe(snapshot.ram_total)}"
                f"{'' if ram >= budget.of(snapshot.ram_total) else '; other programs use more'}"
                "); lower num_ctx or OLLA_NUM_PARALLEL, or raise OLLA_RAM_BUDGET"
            )
        device = placement.gpu
        vram = 0 if device is None else self._gpu_capacity(device, snapshot, alone=True)
        if device is not None and placement.vram > vram:
            vram_budget = self._settings.vram_budget.describe(_gpu(snapshot, device).total)
            advice = (
                "lower num_ctx or OLLA_NUM_PARALLEL (exllamav2 runs a model on the GPU whole)"
                if key.backend == EXLLAMAV2
                else "lower num_gpu or leave it out to let olla choose"
            )
            raise InsufficientMemory(
                f"{name} with num_gpu {placement.gpu_layers} needs "
                f"{format_size(placement.vram)} on GPU {device}, but olla has "
                f"{format_size(max(vram, 0))} there (OLLA_VRAM_BUDGET={vram_budget}); {advice}"
            )

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
        on_gpu = placement.gpu_layers > 0
        plan = self._load_plan(key, on_gpu)
        spec = RunnerSpec(
            backend=key.backend,
            model_path=key.model_path,
            socket_path=str(self._socket_dir / f"runner-{self._count}.sock"),
            num_ctx=key.num_ctx,
            num_parallel=self._settings.num_parallel,
            kv_unified=self._kv_unified(on_gpu),
            num_threads=key.num_threads,
            num_gpu_layers=placement.gpu_layers,
            main_gpu=placement.gpu,
            flash_attention=self._flash_attention(key, plan.cache_type),
            cache_type=plan.cache_type,
            debug=self._settings.debug,
        )
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


def _gpu(snapshot: Snapshot, device: int) -> Gpu:
    return next(g for g in snapshot.gpus if g.index == device)
