"""What olla may still place: its budgets, less what other programs and its own models hold.

Pure arithmetic over one snapshot of the machine, so it is tested without asyncio. A model holds
its estimate from the moment its load is decided (loading), while it serves (ready) and until its
runner has exited (stopping); the machine's free memory does not yet show a model still loading.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from olla.backends.choice import EXLLAMAV2
from olla.config import Settings
from olla.errors import InsufficientMemory
from olla.runtime.loaded import State
from olla.runtime.placement import Placement
from olla.runtime.resources import Gpu, Snapshot
from olla.units import format_size


class Holds(Protocol):
    """A model as the arithmetic sees it (a `LoadedModel`)."""

    @property
    def state(self) -> State: ...

    @property
    def ram(self) -> int: ...

    def vram(self, device: int) -> int: ...


@dataclass(frozen=True)
class Capacity:
    """Room for models on the machine of `snapshot`, beside `models` (held by olla now)."""

    settings: Settings
    snapshot: Snapshot
    models: Sequence[Holds]

    def ram(self, alone: bool, stopped: bool = False) -> int:
        """RAM olla could have: its budget, less what other programs hold. `alone`: as if olla's
        own models were unloaded; else what is left beside them (`stopped`: once the models
        now stopping have exited)."""
        budget = self.settings.ram_budget.of(self.snapshot.ram_total)
        sizes = [(m.state, m.ram) for m in self.models]
        return _room(budget, self.snapshot.ram_available, sizes, alone, stopped)

    def gpu(self, device: int, alone: bool, stopped: bool = False) -> int:
        """As `ram`, for GPU `device` and the VRAM budget."""
        gpu = self.device(device)
        budget = self.settings.vram_budget.of(gpu.total)
        sizes = [(m.state, m.vram(device)) for m in self.models]
        return _room(budget, gpu.free, sizes, alone, stopped)

    def gpu_rooms(self) -> list[int]:
        """Each GPU's room as if olla's other models were unloaded: where a model may go."""
        return [self.gpu(gpu.index, alone=True) for gpu in self.snapshot.gpus]

    def device(self, index: int) -> Gpu:
        return next(g for g in self.snapshot.gpus if g.index == index)

    def fits(self, placement: Placement, stopped: bool = False) -> bool:
        """Whether `placement` fits beside the models held now (`stopped`: once the models now
        stopping have exited), in memory and within max_loaded_models."""
        held = sum(1 for m in self.models if not stopped or m.state is not State.STOPPING)
        if held >= self.settings.max_loaded_models:
            return False
        if placement.ram > self.ram(alone=False, stopped=stopped):
            return False
        device = placement.gpu
        return device is None or placement.vram <= self.gpu(device, alone=False, stopped=stopped)

    def fits_alone(self, placement: Placement) -> bool:
        """Whether `placement` fits with every other model unloaded: what `check_alone` refuses."""
        if placement.ram > self.ram(alone=True):
            return False
        device = placement.gpu
        return device is None or placement.vram <= self.gpu(device, alone=True)

    def check_alone(self, name: str, num_ctx: int, backend: str, placement: Placement) -> None:
        """InsufficientMemory, saying what `placement` needs and what to change, when it cannot
        fit even with every other model unloaded."""
        settings, snapshot = self.settings, self.snapshot
        ram, memory = self.ram(alone=True), placement.memory
        if placement.ram > ram:
            budget = settings.ram_budget
            others = "" if ram >= budget.of(snapshot.ram_total) else "; other programs use more"
            raise InsufficientMemory(
                f"{name} needs {format_size(placement.ram)} of RAM with num_ctx {num_ctx} "
                f"for {settings.num_parallel} parallel sequences (weights "
                f"{format_size(memory.weights)}, KV cache {format_size(memory.kv_cache)}), but "
                f"olla has {format_size(max(ram, 0))} (OLLA_RAM_BUDGET="
                f"{budget.describe(snapshot.ram_total)}{others}); lower num_ctx or "
                "OLLA_NUM_PARALLEL, or raise OLLA_RAM_BUDGET"
            )
        device = placement.gpu
        vram = 0 if device is None else self.gpu(device, alone=True)
        if device is not None and placement.vram > vram:
            vram_budget = settings.vram_budget.describe(self.device(device).total)
            advice = (
                "lower num_ctx or OLLA_NUM_PARALLEL (exllamav2 runs a model on the GPU whole)"
                if backend == EXLLAMAV2
                else "lower num_gpu or leave it out to let olla choose"
            )
            raise InsufficientMemory(
                f"{name} with num_gpu {placement.gpu_layers} needs "
                f"{format_size(placement.vram)} on GPU {device}, but olla has "
                f"{format_size(max(vram, 0))} there (OLLA_VRAM_BUDGET={vram_budget}); {advice}"
            )


def _room(
    budget: int, free: int, sizes: Sequence[tuple[State, int]], alone: bool, stopped: bool
) -> int:
    by_state = {state: 0 for state in State}
    for state, size in sizes:
        by_state[state] += size
    # `free` was read from the machine: models still loading have not taken theirs yet
    allocated = by_state[State.READY] + by_state[State.STOPPING]
    if alone:
        return min(budget, free + allocated)
    held = sum(by_state.values())
    freed = by_state[State.STOPPING] if stopped else 0
    return min(budget - held + freed, free + freed - by_state[State.LOADING])
