"""ModelManager's rules on stand-in runners and a made-up machine: placement, eviction to fit
memory and the count limit, busy models, keep_alive, the queue.

The real runner process is exercised by the daemon tests; here only the decisions are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from olla.config import Settings
from olla.errors import (
    InsufficientMemory,
    InvalidRequest,
    ModelLoadError,
    NotSupported,
    Overloaded,
)
from olla.registry.manifests import ModelConfig
from olla.registry.model_dir import read_dir_info
from olla.registry.store import ResolvedModel
from olla.runtime.estimate import DirShape, ModelShape, Shape
from olla.runtime.manager import CallLater, Lease, ModelManager
from olla.runtime.resources import Gpu, Snapshot
from olla.units import Budget
from olla.wire.spec import RunnerSpec
from tests.conftest import until
from tests.model_dirs import model_files

MiB = 2**20
GiB = 2**30


class Machine:
    """A made-up machine: RAM and GPUs of given sizes; free memory follows what is loaded."""

    def __init__(self, ram: int = 64 * GiB, gpus: tuple[int, ...] = ()) -> None:
        self.ram, self.gpus = ram, gpus
        self.other_ram = 0  # held by other programs
        self.other_vram = [0] * len(gpus)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            ram_total=self.ram,
            ram_available=self.ram - self.other_ram,
            gpus=tuple(
                Gpu(i, f"GPU{i}", total, total - self.other_vram[i])
                for i, total in enumerate(self.gpus)
            ),
        )


def shape(layer_mib: int = 10, layers: int = 10) -> ModelShape:
    """A small transformer: `layers` blocks of `layer_mib` MiB; 1 KiB of KV per token per layer."""
    return ModelShape(
        layers=layers,
        embedding=256,
        heads=4,
        kv_heads=1,
        key_length=256,
        value_length=256,
        feed_forward=512,
        vocab=1000,
        layer_weights=(layer_mib * MiB,) * layers,
        input_weights=MiB,
        head_weights=MiB,
    )


SHAPES = {"big": shape(layer_mib=100), "huge": shape(layer_mib=1000)}


class StubRunner:
    """Starts and stops at once (or when told); records what happened to it."""

    def __init__(self, spec: RunnerSpec, name: str, log: list[str], fail: bool = False) -> None:
        self.spec, self.name, self.log, self.fail = spec, name, log, fail
        self.alive = False
        self.pid = 1
        self.gate: asyncio.Event | None = None

    async def start(self) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ModelLoadError(f"cannot load {self.name}")
        self.alive = True
        self.log.append(f"load {self.name}")

    async def call(self, op: str) -> dict[str, Any]:
        return {"memory": {"weights": 100, "kv_cache": 20}}

    async def stop(self) -> None:
        if self.alive:
            self.log.append(f"unload {self.name}")
        self.alive = False


def model(name: str, model_format: str = "gguf") -> ResolvedModel:
    """A ResolvedModel stand-in: the manager reads its name, entry, format and model path only."""

    class Entry:
        def __init__(self) -> None:
            self.name = type("N", (), {"display": f"{name}:latest"})()

    config = ModelConfig(model_format=model_format)
    return ResolvedModel(entry=Entry(), model_path=Path(f"/models/{name}"), config=config)  # type: ignore[arg-type]


def make(
    machine: Machine | None = None,
    call_later: CallLater | None = None,
    gate: asyncio.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    **settings: Any,
) -> tuple[ModelManager, list[str], dict[str, StubRunner]]:
    """A manager on `machine` (64 GiB of RAM, no GPU by default); models are 100 MiB unless
    named `big*` (1 GiB) or `huge*` (10 GiB). With `gate`, loads end once it is set."""
    log: list[str] = []
    runners: dict[str, StubRunner] = {}

    def spawn(spec: RunnerSpec, name: str) -> StubRunner:
        runners[name] = StubRunner(spec, name, log, fail=name.startswith("broken"))
        runners[name].gate = gate
        return runners[name]

    def shape_of(path: str) -> Shape:
        name = Path(path).name
        if name.startswith("exl2"):
            return DirShape(read_dir_info(model_files()["config.json"]), 130 * MiB)
        return next((s for prefix, s in SHAPES.items() if name.startswith(prefix)), shape())

    base = replace(Settings(), **{"keep_alive": 300.0, "max_loaded_models": 2, **settings})
    manager = ModelManager(
        base,
        spawn,
        clock=clock,
        resources=machine or Machine(),
        shape_of=shape_of,  # type: ignore[arg-type]
        call_later=call_later,
    )
    return manager, log, runners


async def use(manager: ModelManager, name: str, keep_alive: float | None = None) -> None:
    lease = await manager.acquire(model(name), {}, keep_alive)
    await lease.release()


async def settled(manager: ModelManager) -> None:
    """Let background unloads finish."""
    for _ in range(100):
        await asyncio.sleep(0)
    await asyncio.gather(*manager._stopping)


def loaded_names(manager: ModelManager) -> list[str]:
    return sorted(m.name for m in manager.loaded())


async def test_the_least_recently_used_idle_model_makes_room() -> None:
    manager, log, _ = make()
    await use(manager, "a")
    await use(manager, "b")
    await use(manager, "a")  # b is now the least recently used
    await use(manager, "c")
    await settled(manager)
    assert log == ["load a:latest", "load b:latest", "unload b:latest", "load c:latest"]
    assert loaded_names(manager) == ["a:latest", "c:latest"]
    await manager.close()


async def test_a_busy_model_is_never_evicted_the_newcomer_waits() -> None:
    manager, log, _ = make(max_loaded_models=1)
    busy = await manager.acquire(model("a"), {})
    waiting = asyncio.create_task(use(manager, "b"))
    await settled(manager)
    assert not waiting.done() and log == ["load a:latest"]
    await busy.release()
    await asyncio.wait_for(waiting, 5)
    await settled(manager)
    assert log == ["load a:latest", "unload a:latest", "load b:latest"]
    await manager.close()


async def test_keep_alive_zero_unloads_after_the_request_and_negative_keeps_forever() -> None:
    manager, log, _ = make()
    await use(manager, "a", keep_alive=0)
    await settled(manager)
    assert log == ["load a:latest", "unload a:latest"] and loaded_names(manager) == []
    await use(manager, "b", keep_alive=-1)
    await settled(manager)
    [b] = manager.loaded()
    assert b.expires_at is None and b.keep_alive < 0
    await manager.close()


class Timers:
    """The manager's keep_alive timers, fired by the test instead of by the clock."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None], Timer]] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer()
        self.pending.append((delay, callback, timer))
        return timer

    def fire(self) -> list[float]:
        """Run every timer not cancelled; their delays."""
        due, self.pending = self.pending, []
        fired = [delay for delay, callback, timer in due if not timer.cancelled]
        for _, callback, timer in due:
            if not timer.cancelled:
                callback()
        return fired


class Timer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


async def test_keep_alive_expires_on_a_timer() -> None:
    timers = Timers()
    manager, log, _ = make(call_later=timers.call_later)
    await use(manager, "a", keep_alive=30)
    [a] = manager.loaded()
    assert a.expires_at is not None and a.expires_at > manager.now()
    await settled(manager)
    assert log == ["load a:latest"]
    assert timers.fire() == [30]
    await settled(manager)
    assert log == ["load a:latest", "unload a:latest"]
    await manager.close()


async def test_a_new_request_cancels_the_keep_alive_timer() -> None:
    timers = Timers()
    manager, log, _ = make(call_later=timers.call_later)
    await use(manager, "a", keep_alive=30)
    lease = await manager.acquire(model("a"), {}, 30)
    assert timers.fire() == []  # leased: the timer of the earlier request is gone
    await settled(manager)
    assert log == ["load a:latest"]
    await lease.release()
    assert timers.fire() == [30]  # the last release starts it again
    await settled(manager)
    assert log == ["load a:latest", "unload a:latest"]
    await manager.close()


async def test_changed_load_options_reload_once_the_model_is_idle() -> None:
    manager, log, runners = make()
    first = await manager.acquire(model("a"), {"num_ctx": 2048})
    second = asyncio.create_task(manager.acquire(model("a"), {"num_ctx": 4096}))
    await settled(manager)
    assert not second.done()
    await first.release()
    lease: Lease = await asyncio.wait_for(second, 5)
    assert lease.runner.spec.num_ctx == 4096  # type: ignore[attr-defined]
    assert log == ["load a:latest", "unload a:latest", "load a:latest"]
    await lease.release()
    await manager.close()


async def test_a_dead_runner_is_replaced_by_the_next_request() -> None:
    manager, log, runners = make()
    await use(manager, "a")
    runners["a:latest"].alive = False  # killed
    assert loaded_names(manager) == []
    await use(manager, "a")
    assert log == ["load a:latest", "load a:latest"]
    await manager.close()


async def test_a_failed_load_leaves_no_trace_and_frees_its_place() -> None:
    manager, log, _ = make(max_loaded_models=1)
    with pytest.raises(ModelLoadError):
        await use(manager, "broken")
    await use(manager, "a")
    assert log == ["load a:latest"]
    await manager.close()


async def test_requests_past_the_queue_get_503() -> None:
    manager, _, _ = make(max_loaded_models=1, max_queue=2, num_parallel=1)
    busy = await manager.acquire(model("a"), {})
    waiters = [asyncio.create_task(manager.acquire(model("b"), {})) for _ in range(2)]
    await settled(manager)
    with pytest.raises(Overloaded) as info:
        await manager.acquire(model("b"), {})
    assert "OLLA_MAX_QUEUE" in str(info.value) and info.value.status == 503
    # requests for a loaded model beyond its parallel sequences count too
    extra = await manager.acquire(model("a"), {})
    also = await manager.acquire(model("a"), {})
    with pytest.raises(Overloaded):
        await manager.acquire(model("a"), {})
    for lease in (busy, extra, also):
        await lease.release()
    for task in waiters:
        await (await asyncio.wait_for(task, 5)).release()
    await manager.close()


async def test_a_request_that_waits_for_room_past_the_queue_timeout_gets_503() -> None:
    timers = Timers()
    now = [100.0]
    manager, log, _ = make(
        max_loaded_models=1, queue_timeout=60.0, call_later=timers.call_later, clock=lambda: now[0]
    )
    busy = await manager.acquire(model("a"), {})
    waiting = asyncio.create_task(manager.acquire(model("b"), {}))
    await until(lambda: bool(timers.pending), timeout=10, what="b to wait for room")
    assert not waiting.done() and manager.waiting() == {"b:latest": 1}
    now[0] += 60.0
    assert timers.fire() == [60.0]
    with pytest.raises(Overloaded) as info:
        await asyncio.wait_for(waiting, 5)
    message = str(info.value)
    assert info.value.status == 503 and info.value.retry_after > 0
    assert "waited 1m0s for room to load b:latest" in message, message
    assert "OLLA_QUEUE_TIMEOUT=1m0s" in message
    assert manager.waiting() == {} and log == ["load a:latest"]
    await busy.release()
    await use(manager, "b")  # with room, the next request is served
    assert log[-1] == "load b:latest"
    await manager.close()


async def test_a_request_served_in_time_leaves_no_queue_timer() -> None:
    timers = Timers()
    manager, _, _ = make(max_loaded_models=1, queue_timeout=60.0, call_later=timers.call_later)
    busy = await manager.acquire(model("a"), {})
    waiting = asyncio.create_task(manager.acquire(model("b"), {}))
    await settled(manager)
    await busy.release()
    await (await asyncio.wait_for(waiting, 5)).release()
    assert timers.fire() == [300.0]  # b's keep_alive; its queue timer was called off
    await manager.close()


async def test_waiting_for_the_model_own_load_is_not_bounded_by_the_queue_timeout() -> None:
    timers, gate = Timers(), asyncio.Event()
    manager, log, _ = make(queue_timeout=60.0, call_later=timers.call_later, gate=gate)
    first = asyncio.create_task(manager.acquire(model("a"), {}))
    second = asyncio.create_task(manager.acquire(model("a"), {}))
    await settled(manager)
    assert not first.done() and not second.done()
    gate.set()
    for task in (first, second):
        await (await asyncio.wait_for(task, 5)).release()
    assert log == ["load a:latest"]
    # the only timer ever started is a's keep_alive: waiting for its load started no queue timer
    assert [delay for delay, _, _ in timers.pending] == [300.0]
    await manager.close()


async def test_the_runner_spec_carries_the_name_the_queue_timeout_and_the_threads() -> None:
    manager, _, runners = make(queue_timeout=90.0, num_threads=3)
    await use(manager, "a")
    spec = runners["a:latest"].spec
    assert (spec.model_name, spec.queue_timeout, spec.num_threads) == ("a:latest", 90.0, 3)
    lease = await manager.acquire(model("b"), {"num_thread": 2})  # the option wins
    assert runners["b:latest"].spec.num_threads == 2
    await lease.release()
    await manager.close()
    manager, _, runners = make(queue_timeout=-1.0)  # 0 or negative: no limit
    await use(manager, "a")
    assert (runners["a:latest"].spec.queue_timeout, runners["a:latest"].spec.num_threads) == (
        0.0,
        None,
    )
    await manager.close()


async def test_unload_waits_for_the_requests_in_flight() -> None:
    manager, log, _ = make()
    lease = await manager.acquire(model("a"), {})
    assert await manager.unload(model("a"))
    await settled(manager)
    assert log == ["load a:latest"]  # still streaming
    await lease.release()
    await settled(manager)
    assert log == ["load a:latest", "unload a:latest"]
    assert not await manager.unload(model("a"))  # not loaded any more
    await manager.close()


# --- memory: placement and eviction to fit the budgets -------------------------------------


async def test_a_model_goes_wholly_on_the_gpu_when_it_fits() -> None:
    manager, _, runners = make(Machine(gpus=(24 * GiB,)))
    lease = await manager.acquire(model("big"), {})
    spec = runners["big:latest"].spec
    assert spec.num_gpu_layers == 11 and spec.main_gpu == 0  # 10 blocks + the output layer
    assert spec.cache_type == "f16" and spec.flash_attention is None  # auto: on where supported
    placement = lease.model.placement
    assert placement is not None and placement.ram < 10 * MiB  # embeddings and buffers only
    await lease.release()
    await manager.close()


async def test_as_many_layers_as_fit_go_on_the_gpu_the_rest_on_the_cpu() -> None:
    # 10.2 GiB budget (of a 12 GiB GPU at 85%) for a 10 x 1000 MiB model: the output layer and
    # 9 blocks fit with their KV cache and buffers and the process's overhead, 10 do not
    manager, _, runners = make(Machine(gpus=(12 * GiB,)), vram_budget=Budget(share=0.85))
    lease = await manager.acquire(model("huge"), {})
    assert runners["huge:latest"].spec.num_gpu_layers == 10
    assert lease.model.placement is not None and lease.model.placement.describe() == (
        "GPU 0 (10 of 11 layers; the rest on the CPU)"
    )
    await lease.release()
    await manager.close()


async def test_the_gpu_with_the_most_room_is_used_and_other_programs_count() -> None:
    machine = Machine(gpus=(24 * GiB, 24 * GiB))
    machine.other_vram[0] = 20 * GiB
    manager, _, runners = make(machine)
    await use(manager, "big")
    assert runners["big:latest"].spec.main_gpu == 1
    await manager.close()


async def test_a_model_with_no_gpu_room_runs_on_the_cpu_with_the_cpu_defaults() -> None:
    manager, _, runners = make(Machine(gpus=(256 * MiB,)))
    await use(manager, "big")
    spec = runners["big:latest"].spec
    assert spec.num_gpu_layers == 0 and spec.main_gpu is None
    # per-slot caches on the CPU; flash attention as llama.cpp chooses
    assert spec.kv_unified is False
    assert spec.flash_attention is None
    await manager.close()


async def test_num_gpu_overrides_the_placement_and_a_bad_option_is_a_400() -> None:
    manager, _, runners = make(Machine(gpus=(24 * GiB,)))
    await use_with(manager, "big", {"num_gpu": 3})
    assert runners["big:latest"].spec.num_gpu_layers == 3
    await use_with(manager, "other", {"num_gpu": 0, "kv_cache_type": "q8_0"})
    spec = runners["other:latest"].spec
    assert spec.num_gpu_layers == 0 and spec.cache_type == "q8_0"
    assert spec.flash_attention is True  # llama.cpp needs it for a quantized V cache
    with pytest.raises(InvalidRequest, match="KV cache type"):
        await use_with(manager, "big", {"kv_cache_type": "f8"})
    await manager.close()


async def test_idle_models_are_evicted_least_recently_used_first_to_fit_ram() -> None:
    # 2.5 GiB of RAM for models: two 1 GiB models fit, a third evicts the least recently used
    manager, log, _ = make(ram_budget=Budget(bytes=2560 * MiB), max_loaded_models=5)
    for name in ("big-a", "big-b", "big-a", "big-c"):
        await use(manager, name)
    await settled(manager)
    assert log == [
        "load big-a:latest",
        "load big-b:latest",
        "unload big-b:latest",
        "load big-c:latest",
    ]
    assert loaded_names(manager) == ["big-a:latest", "big-c:latest"]
    await manager.close()


async def test_a_busy_model_is_not_evicted_to_fit_memory_the_newcomer_waits() -> None:
    manager, log, _ = make(ram_budget=Budget(bytes=1536 * MiB), max_loaded_models=5)
    busy = await manager.acquire(model("big-a"), {})
    waiting = asyncio.create_task(use(manager, "big-b"))
    await settled(manager)
    assert not waiting.done() and log == ["load big-a:latest"]
    small = await manager.acquire(model("small"), {})  # fits beside it: no need to wait
    await busy.release()
    await asyncio.wait_for(waiting, 5)
    await settled(manager)
    assert log == [
        "load big-a:latest",
        "load small:latest",
        "unload big-a:latest",
        "load big-b:latest",
    ]
    await small.release()
    await manager.close()


async def test_a_model_that_cannot_fit_alone_is_refused_with_what_it_needs() -> None:
    manager, log, _ = make(ram_budget=Budget.parse("4GiB"))
    await use(manager, "small")
    with pytest.raises(InsufficientMemory) as info:
        await use(manager, "huge")
    message = str(info.value)
    assert info.value.status == 507 and "olla has 4.3 GB (OLLA_RAM_BUDGET=4GiB)" in message
    assert "huge:latest needs 11 GB of RAM" in message and "lower num_ctx" in message
    assert log == ["load small:latest"]  # nothing was evicted for a hopeless load
    await manager.close()


async def test_other_programs_memory_shrinks_what_olla_may_use() -> None:
    machine = Machine(ram=8 * GiB)
    machine.other_ram = 7 * GiB  # a 75% budget is 6 GiB, but only 1 GiB is available
    manager, _, _ = make(machine)
    with pytest.raises(InsufficientMemory, match="olla has 1.1 GB .* other programs use more"):
        await use(manager, "big")
    await use(manager, "small")
    await manager.close()


async def use_with(manager: ModelManager, name: str, options: dict[str, Any]) -> None:
    lease = await manager.acquire(model(name), options)
    await lease.release()


async def test_an_exl2_model_goes_whole_onto_a_gpu_with_exllamav2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("olla.runtime.load_key.check_exllamav2", lambda *_: None)  # "installed"
    manager, _, runners = make(Machine(gpus=(8 * GiB, 24 * GiB)))
    lease = await manager.acquire(model("exl2", "exl2"), {"num_ctx": 1024})
    spec = runners["exl2:latest"].spec
    assert spec.backend == "exllamav2" and spec.main_gpu == 1
    assert spec.num_gpu_layers == 31  # every layer
    placement = lease.model.placement
    assert placement is not None and placement.ram == 49152 * 576 * 2  # the embeddings
    await lease.release()
    await manager.close()
    cpu_only, _, _ = make(Machine())
    with pytest.raises(NotSupported) as info:
        await cpu_only.acquire(model("exl2", "exl2"), {})
    assert "CUDA GPU" in info.value.message
    await cpu_only.close()
