"""The manager's room arithmetic on its own: budgets, other programs, and models by state."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from olla.config import Settings
from olla.errors import InsufficientMemory
from olla.memory import Memory
from olla.runtime.capacity import Capacity
from olla.runtime.loaded import State
from olla.runtime.placement import GPU_OVERHEAD, Placement
from olla.runtime.resources import Gpu, Snapshot
from olla.units import Budget

GiB = 2**30


@dataclass
class Held:
    """A model as the arithmetic sees it: a state, RAM, and VRAM on one GPU."""

    state: State
    ram: int = 0
    gpu_bytes: int = 0
    gpu: int | None = None

    def vram(self, device: int) -> int:
        return self.gpu_bytes if device == self.gpu else 0


def settings(**changes: object) -> Settings:
    base = replace(Settings(), ram_budget=Budget(bytes=10 * GiB), max_loaded_models=3)
    return replace(base, vram_budget=Budget(share=0.5), **changes)  # type: ignore[arg-type]


def cpu(ram: int) -> Placement:
    return Placement(layers=10, gpu_layers=0, gpu=None, memory=Memory(weights=ram))


def gpu(vram: int, device: int = 0) -> Placement:
    memory = Memory(weights=vram, gpu=vram)
    return Placement(layers=10, gpu_layers=10, gpu=device, memory=memory)


MACHINE = Snapshot(
    ram_total=64 * GiB, ram_available=8 * GiB, gpus=(Gpu(0, "g", 16 * GiB, 16 * GiB),)
)


def test_alone_counts_what_olla_holds_as_its_own_within_the_budget() -> None:
    models = [Held(State.READY, ram=3 * GiB), Held(State.LOADING, ram=5 * GiB)]
    capacity = Capacity(settings(), MACHINE, models)
    # free (8) + what ready models hold (3); a loading model's is not yet taken from `free`
    assert capacity.ram(alone=True) == 10 * GiB  # and the budget caps 11 at 10
    alone = Capacity(settings(ram_budget=Budget(bytes=20 * GiB)), MACHINE, models)
    assert alone.ram(alone=True) == 11 * GiB


def test_beside_the_models_held_and_once_the_stopping_ones_are_gone() -> None:
    models = [Held(State.READY, ram=2 * GiB), Held(State.STOPPING, ram=3 * GiB)]
    capacity = Capacity(settings(), MACHINE, models)
    assert capacity.ram(alone=False) == 5 * GiB  # budget 10 - held 5; free 8 allows it
    assert capacity.ram(alone=False, stopped=True) == 8 * GiB  # 10 - 5 + 3; free 8 + 3 = 11
    loading = Capacity(settings(), MACHINE, [Held(State.LOADING, ram=6 * GiB)])
    assert loading.ram(alone=False) == 2 * GiB  # free 8 less what the load will take


def test_fits_within_memory_and_the_count_of_models() -> None:
    models = [Held(State.READY, ram=GiB), Held(State.STOPPING, ram=4 * GiB)]
    capacity = Capacity(settings(max_loaded_models=2), MACHINE, models)
    assert not capacity.fits(cpu(GiB))  # two held: no third
    assert capacity.fits(cpu(GiB), stopped=True)  # the stopping one frees a place
    assert capacity.fits(cpu(9 * GiB), stopped=True)  # budget 10 - held 5 + freed 4
    assert not capacity.fits(cpu(9 * GiB + 1), stopped=True)


def test_gpu_room_is_per_device_with_its_budget_and_the_process_overhead() -> None:
    models = [Held(State.READY, gpu_bytes=3 * GiB, gpu=0)]
    capacity = Capacity(settings(), MACHINE, models)
    assert capacity.gpu_rooms() == [8 * GiB]  # half of 16
    assert capacity.gpu(0, alone=False) == 5 * GiB
    assert capacity.fits(gpu(5 * GiB - GPU_OVERHEAD))
    assert not capacity.fits(gpu(5 * GiB - GPU_OVERHEAD + 1))


def test_a_model_that_cannot_fit_alone_is_refused_with_what_to_change() -> None:
    capacity = Capacity(settings(), MACHINE, [Held(State.READY, ram=GiB)])
    capacity.check_alone("m:latest", 4096, "llama_cpp", cpu(9 * GiB))  # 8 free + 1 held
    with pytest.raises(
        InsufficientMemory, match=r"olla has 9.7 GB \(OLLA_RAM_BUDGET=.*; other programs use more\)"
    ):
        capacity.check_alone("m:latest", 4096, "llama_cpp", cpu(9 * GiB + 1))
    with pytest.raises(
        InsufficientMemory,
        match=r"on GPU 0, but olla has 8.6 GB there \(OLLA_VRAM_BUDGET=50%.*num_gpu",
    ):
        capacity.check_alone("m:latest", 4096, "llama_cpp", gpu(8 * GiB))
