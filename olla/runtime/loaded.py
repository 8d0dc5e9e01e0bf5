"""A loaded model as the manager keeps it: its runner, its place, and what decides its lifetime."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from olla.memory import Memory
from olla.registry.store import ModelEntry
from olla.runtime.load_key import LoadKey
from olla.runtime.placement import Placement
from olla.runtime.runner_client import RunnerClient


class Cancellable(Protocol):
    """A scheduled call that can be called off (asyncio's TimerHandle)."""

    def cancel(self) -> None: ...


class State(enum.Enum):
    """Where a model is in its life: loading, serving, or on its way out."""

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
    timer: Cancellable | None = field(default=None, repr=False)

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
