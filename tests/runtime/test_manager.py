"""ModelManager's placement rules on stand-in runners: LRU eviction, busy models, keep_alive, queue.

The real runner process is exercised by the daemon tests; here only the decisions are.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from olla.config import Settings
from olla.errors import ModelLoadError, Overloaded
from olla.registry.store import ResolvedModel
from olla.runtime.manager import Lease, ModelManager
from olla.runtime.protocol import RunnerSpec


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


def model(name: str) -> ResolvedModel:
    """A ResolvedModel stand-in: the manager reads its name, entry and model path only."""

    class Entry:
        def __init__(self) -> None:
            self.name = type("N", (), {"display": f"{name}:latest"})()

    return ResolvedModel(entry=Entry(), model_path=Path(f"/models/{name}"), config=None)  # type: ignore[arg-type]


def make(**settings: Any) -> tuple[ModelManager, list[str], dict[str, StubRunner]]:
    log: list[str] = []
    runners: dict[str, StubRunner] = {}

    def spawn(spec: RunnerSpec, name: str) -> StubRunner:
        runners[name] = StubRunner(spec, name, log, fail=name.startswith("broken"))
        return runners[name]

    base = replace(Settings(), **{"keep_alive": 300.0, "max_loaded_models": 2, **settings})
    return ModelManager(base, spawn), log, runners  # type: ignore[arg-type]


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


async def test_keep_alive_expires_on_a_timer() -> None:
    manager, log, _ = make()
    await use(manager, "a", keep_alive=0.05)
    [a] = manager.loaded()
    assert a.expires_at is not None and a.expires_at > manager.now()
    for _ in range(200):
        await asyncio.sleep(0.01)
        if not manager.loaded():
            break
    await settled(manager)
    assert log == ["load a:latest", "unload a:latest"]
    await manager.close()


async def test_a_new_request_cancels_the_keep_alive_timer() -> None:
    manager, log, _ = make()
    await use(manager, "a", keep_alive=0.05)
    lease = await manager.acquire(model("a"), {}, 0.05)
    await asyncio.sleep(0.15)
    assert log == ["load a:latest"]  # leased: the timer of the earlier request is gone
    await lease.release()
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
