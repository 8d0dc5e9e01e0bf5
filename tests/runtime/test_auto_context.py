"""The default num_ctx as Ollama sets it: a tier by total VRAM, capped at the trained context,
stepped down when it does not fit; and the manager loading with it, on made-up machines."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from olla.config import Settings
from olla.errors import InsufficientMemory
from olla.registry.model_dir import read_dir_info
from olla.runtime import auto_context
from olla.runtime.auto_context import candidates, vram_tier
from olla.runtime.estimate import DirShape, Shape
from olla.runtime.manager import ModelManager
from olla.runtime.placement import LoadPlan, place
from olla.runtime.resources import Gpu
from olla.units import Budget
from olla.wire.spec import RunnerSpec
from tests.model_dirs import model_files
from tests.runtime.test_manager import GiB, Machine, MiB, StubRunner, model, shape


def gpus(*sizes: float) -> tuple[Gpu, ...]:
    return tuple(
        Gpu(i, f"GPU{i}", int(size * GiB), int(size * GiB)) for i, size in enumerate(sizes)
    )


@pytest.mark.parametrize(
    ("sizes", "tier"),
    [
        ((), 4096),  # no GPU
        ((16,), 4096),
        ((22.9,), 4096),
        ((23.99,), 32768),  # a 24 GB card reports a little less than 24 GiB
        ((40,), 32768),
        ((46.9,), 32768),
        ((47.5,), 262144),  # a 48 GB card
        ((24, 24), 262144),  # the total over GPUs
        ((12, 12), 32768),
        ((79.6,), 262144),  # an H100
    ],
)
def test_the_tier_follows_the_total_vram(sizes: tuple[float, ...], tier: int) -> None:
    assert vram_tier(gpus(*sizes)) == tier


@pytest.mark.parametrize(
    ("tier", "trained", "tries"),
    [
        (262144, None, (262144, 32768, 4096)),  # a file without the key: the tier
        (262144, 131072, (131072, 32768, 4096)),
        (262144, 40960, (40960, 32768, 4096)),
        (262144, 8192, (8192, 4096)),
        (32768, 8192, (8192, 4096)),
        (4096, 8192, (4096,)),  # SmolLM2-135M on a CPU
        (4096, 2048, (2048,)),  # a 2,048-context model gets 2,048, not 4,096
        (262144, 2048, (2048,)),
    ],
)
def test_candidates_start_at_the_tier_capped_by_the_trained_context(
    tier: int, trained: int | None, tries: tuple[int, ...]
) -> None:
    assert candidates(tier, trained) == tries


def test_the_trained_context_comes_from_the_gguf_or_config_json() -> None:
    assert auto_context.trained_context(replace(shape(), context_length=2048)) == 2048
    assert auto_context.trained_context(shape()) is None
    exl2 = DirShape(read_dir_info(model_files()["config.json"]), 130 * MiB)
    assert auto_context.trained_context(exl2) == 8192  # max_position_embeddings


def test_choose_steps_down_to_the_largest_that_fits_a_made_up_budget() -> None:
    # 10 KiB of KV a token (10 layers x 1 KiB) for 4 sequences: 262144 tokens is 10 GiB of
    # cache, 32768 is 1.25 GiB; a 3 GiB budget takes 32768
    model_shape = shape(layer_mib=100)
    placed: list[int] = []

    def on_cpu(num_ctx: int) -> Any:
        placed.append(num_ctx)
        return place(model_shape, LoadPlan(num_ctx, 4, "f16", True), [])

    choice, placement = auto_context.choose(
        gpus(80), model_shape, on_cpu, lambda p: p.ram <= 3 * GiB
    )
    assert (choice.num_ctx, choice.tier, choice.too_big) == (32768, 262144, (262144,))
    assert placement.memory.kv_cache == 32768 * 4 * 10 * 1024
    assert placed == [4096, 262144, 32768]  # the smallest first: the GPU layers to keep
    assert "num_ctx 32768 chosen by olla" in choice.describe()
    assert "stepped down: 262144 would not fit" in choice.describe()
    # nothing fits: the smallest, for the caller to refuse with what it needs
    choice, placement = auto_context.choose(gpus(80), model_shape, on_cpu, lambda p: False)
    assert choice.num_ctx == 4096 and choice.too_big == (262144, 32768)


def test_choose_never_trades_gpu_layers_for_a_longer_context() -> None:
    # a 4 GiB GPU holds the 1 GiB model whole with 32768 tokens of cache, not with 262144
    model_shape = shape(layer_mib=100)

    def on_gpu(num_ctx: int) -> Any:
        return place(model_shape, LoadPlan(num_ctx, 4, "f16", True), [4 * GiB])

    assert on_gpu(262144).gpu_layers < on_gpu(4096).gpu_layers == 11  # it would fit, in part
    choice, placement = auto_context.choose(gpus(80), model_shape, on_gpu, lambda p: True)
    assert choice.num_ctx == 32768 and placement.gpu_layers == 11


# --- the manager: what it loads with ----------------------------------------------------------


def make(
    machine: Machine, shapes: dict[str, Shape] | None = None, **settings: Any
) -> tuple[ModelManager, list[str], dict[str, StubRunner]]:
    """A manager on `machine` whose models have the shapes named (else `shape()`)."""
    log: list[str] = []
    runners: dict[str, StubRunner] = {}

    def spawn(spec: RunnerSpec, name: str) -> StubRunner:
        runners[name] = StubRunner(spec, name, log)
        return runners[name]

    def shape_of(path: str) -> Shape:
        return (shapes or {}).get(Path(path).name, shape())

    base = replace(Settings(), keep_alive=300.0, **settings)
    spawn_stub: Any = spawn  # a StubRunner stands in for a RunnerClient
    manager = ModelManager(
        base, spawn_stub, clock=time.monotonic, resources=machine, shape_of=shape_of
    )
    return manager, log, runners


async def loaded_ctx(manager: ModelManager, name: str, options: dict[str, Any]) -> int:
    """The num_ctx `name` runs with after a request with `options`."""
    lease = await manager.acquire(model(name), options)
    await lease.release()
    assert lease.runner.spec.num_ctx == lease.model.key.num_ctx
    return lease.model.key.num_ctx


async def test_without_gpus_the_default_is_4096_or_the_trained_context_if_less() -> None:
    shapes: dict[str, Shape] = {
        "smol": replace(shape(), context_length=8192),
        "short": replace(shape(), context_length=2048),
    }
    manager, _, _ = make(Machine(), shapes)
    assert await loaded_ctx(manager, "smol", {}) == 4096
    assert await loaded_ctx(manager, "short", {}) == 2048
    assert await loaded_ctx(manager, "plain", {}) == 4096  # no trained context in the file
    await manager.close()


async def test_a_gpu_machine_gets_its_tier_capped_by_the_trained_context() -> None:
    shapes: dict[str, Shape] = {"long": replace(shape(), context_length=131072)}
    manager, _, _ = make(Machine(gpus=(24 * GiB,)), shapes)
    assert await loaded_ctx(manager, "a", {}) == 32768
    await manager.close()
    manager, _, runners = make(Machine(gpus=(80 * GiB,)), shapes, max_loaded_models=5)
    assert await loaded_ctx(manager, "long", {}) == 131072
    assert await loaded_ctx(manager, "a", {}) == 262144
    assert runners["a:latest"].spec.num_gpu_layers == 11  # the cache fits beside it
    await manager.close()


async def test_an_exl2_directory_is_capped_by_max_position_embeddings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("olla.runtime.load_key.check_exllamav2", lambda *_: None)  # "installed"
    exl2 = DirShape(read_dir_info(model_files()["config.json"]), 130 * MiB)
    manager, _, _ = make(Machine(gpus=(24 * GiB,)), {"exl2": exl2})
    lease = await manager.acquire(model("exl2", "exl2"), {})
    assert lease.model.key.num_ctx == 8192
    await lease.release()
    await manager.close()


async def test_the_default_steps_down_to_fit_and_says_why_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a 48 GiB GPU whose 4 GiB budget holds the 1 GiB model whole with 32768 tokens of cache
    shapes: dict[str, Shape] = {"big": shape(layer_mib=100)}
    machine = Machine(gpus=(48 * GiB,))
    manager, _, runners = make(machine, shapes, vram_budget=Budget(bytes=4 * GiB))
    with caplog.at_level(logging.INFO, logger="olla.runtime.manager"):
        assert await loaded_ctx(manager, "big", {}) == 32768
    assert runners["big:latest"].spec.num_gpu_layers == 11
    lines = [r.getMessage() for r in caplog.records if "chosen by olla" in r.getMessage()]
    assert len(lines) == 1 and "num_ctx 32768 chosen by olla (tier 262144 for 52 GB" in lines[0]
    assert "stepped down: 262144 would not fit" in lines[0]
    await manager.close()


async def test_on_the_cpu_the_default_steps_down_to_fit_the_ram_budget() -> None:
    # the GPU has no room, so the model goes on the CPU, where a 3 GiB budget holds 32768 tokens
    shapes: dict[str, Shape] = {"big": shape(layer_mib=100)}
    machine = Machine(gpus=(48 * GiB,))
    machine.other_vram[0] = 48 * GiB
    manager, _, runners = make(machine, shapes, ram_budget=Budget(bytes=3 * GiB))
    assert await loaded_ctx(manager, "big", {}) == 32768
    assert runners["big:latest"].spec.num_gpu_layers == 0
    await manager.close()


@pytest.mark.parametrize("how", ["option", "setting"])
async def test_an_explicit_num_ctx_is_not_stepped_down(how: str) -> None:
    shapes: dict[str, Shape] = {"big": shape(layer_mib=100)}
    machine = Machine(gpus=(48 * GiB,))
    machine.other_vram[0] = 48 * GiB
    settings: dict[str, Any] = {"ram_budget": Budget(bytes=3 * GiB)}
    options: dict[str, Any] = {}
    if how == "option":
        options["num_ctx"] = 262144
    else:
        settings["context_length"] = 262144  # OLLA_CONTEXT_LENGTH
    manager, log, _ = make(machine, shapes, **settings)
    with pytest.raises(InsufficientMemory, match="with num_ctx 262144") as info:
        await manager.acquire(model("big"), options)
    assert info.value.status == 507 and log == []
    await manager.close()


async def test_the_key_is_stable_a_request_without_num_ctx_never_reloads() -> None:
    shapes: dict[str, Shape] = {"big": shape(layer_mib=100)}
    machine = Machine(gpus=(48 * GiB,))
    manager, log, _ = make(machine, shapes, vram_budget=Budget(bytes=4 * GiB))
    assert await loaded_ctx(manager, "big", {}) == 32768  # stepped down from 262144
    assert await loaded_ctx(manager, "big", {}) == 32768
    assert await loaded_ctx(manager, "big", {"num_ctx": 32768}) == 32768  # what it runs with
    assert await loaded_ctx(manager, "big", {"temperature": 0}) == 32768
    assert log == ["load big:latest"]
    [loaded] = manager.loaded()
    assert loaded.key.num_ctx == 32768 and loaded.key.auto_ctx  # what /api/ps shows
    assert await loaded_ctx(manager, "big", {"num_ctx": 4096}) == 4096  # asked: reloads
    assert await loaded_ctx(manager, "big", {}) == 32768  # and the default again
    assert log.count("load big:latest") == 3
    await manager.close()
