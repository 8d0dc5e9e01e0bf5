"""`Metrics.refresh` alone, with fake runners: a scrape serves what runners said last, asks them
again without waiting, and keeps one question open per runner."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from olla.memory import Memory
from olla.server.metrics import Metrics
from tests.conftest import until

STATS = {"running": 2, "waiting": 1, "blocks_used": 7, "blocks_free": 9, "blocks_cached": 3}


@dataclass
class FakeRunner:
    """Answers `stats` at once, or never (a stopped runner) when `stats` is None."""

    stats: dict[str, Any] | None
    calls: int = 0
    cancelled: int = 0

    async def call(self, op: str) -> dict[str, Any]:
        assert op == "stats"
        self.calls += 1
        if self.stats is None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        assert self.stats is not None
        return self.stats


@dataclass
class FakeModel:
    name: str
    runner: FakeRunner | None
    actual: Memory | None = field(default_factory=lambda: Memory(weights=100, gpu=0))
    placement: None = None


@dataclass
class FakeManager:
    models: list[FakeModel]

    def loaded(self) -> list[FakeModel]:
        return self.models

    def waiting(self) -> dict[str, int]:
        return {}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_a_scrape_serves_the_last_stats_and_never_waits() -> None:
    clock = Clock()
    metrics = Metrics(clock=clock)
    quick, stuck = FakeRunner(STATS), FakeRunner(None)
    manager = FakeManager([FakeModel("quick", quick), FakeModel("stuck", stuck)])
    metrics.refresh(manager)  # not a coroutine: there is nothing it could wait on
    assert value(metrics, "olla_kv_blocks", model="quick", state="used") is None  # none yet
    assert value(metrics, "olla_model_memory_bytes", model="stuck", device="ram") == 100

    def answered() -> bool:
        metrics.refresh(manager)
        return value(metrics, "olla_kv_blocks", model="quick", state="used") is not None

    await until(answered, timeout=5, what="the quick runner's stats")
    clock.now = 130.0
    metrics.refresh(manager)
    assert value(metrics, "olla_kv_blocks", model="quick", state="used") == 7
    assert value(metrics, "olla_sequences", model="quick", state="waiting") == 1
    assert value(metrics, "olla_runner_stats_age_seconds", model="quick") == 30
    assert value(metrics, "olla_kv_blocks", model="stuck", state="used") is None
    assert value(metrics, "olla_runner_stats_age_seconds", model="stuck") is None
    assert stuck.calls == 1  # every scrape found the question still open: no pile-up
    await metrics.close()
    assert stuck.cancelled == 1


async def test_a_question_unanswered_past_the_timeout_is_asked_again() -> None:
    metrics = Metrics(stats_timeout=0.05)
    stuck = FakeRunner(None)
    manager = FakeManager([FakeModel("stuck", stuck)])

    def asked_twice() -> bool:
        metrics.refresh(manager)
        return stuck.calls == 2

    await until(asked_twice, timeout=5, what="a second question after the timeout")
    await metrics.close()


async def test_stats_of_a_runner_that_is_gone_are_not_served() -> None:
    metrics = Metrics()
    first = FakeModel("m", FakeRunner(STATS))
    manager = FakeManager([first])

    def answered() -> bool:
        metrics.refresh(manager)
        return value(metrics, "olla_kv_blocks", model="m", state="used") is not None

    await until(answered, timeout=5, what="the runner's stats")
    manager.models = [FakeModel("m", FakeRunner(None))]  # loaded again: a new runner
    metrics.refresh(manager)
    assert value(metrics, "olla_kv_blocks", model="m", state="used") is None
    manager.models = []  # unloaded
    metrics.refresh(manager)
    assert value(metrics, "olla_loaded_models") == 0
    assert value(metrics, "olla_model_memory_bytes", model="m", device="ram") is None
    await metrics.close()
