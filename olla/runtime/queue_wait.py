"""A request's bounded wait for room for its model (OLLA_QUEUE_TIMEOUT), as the manager keeps it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from olla.errors import Overloaded
from olla.runtime.loaded import Cancellable
from olla.units import format_duration

RETRY_AFTER = 2.0  # seconds, for a request refused because its model's queue is full or slow

# when to call back, and what: the manager's keep_alive and queue timers (asyncio's call_later,
# or a test's own)
CallLater = Callable[[float, Callable[[], None]], Cancellable]


@dataclass(eq=False)
class QueueWait:
    """How long one request may wait for busy models to make room for its model: a timer,
    started at its first wait, marks the wait over; the next wait then refuses the request."""

    name: str  # the model's
    started: float  # the manager's clock
    timeout: float  # seconds; 0 (or less): no limit
    over: bool = False
    timer: Cancellable | None = None

    def check(self, now: float) -> None:
        """Overloaded (503 with Retry-After) once the wait is over."""
        if self.over:
            waited = format_duration(round(now - self.started, 1))
            raise Overloaded(
                f"this request waited {waited} for room to load {self.name} while every "
                f"model in its way stayed busy (OLLA_QUEUE_TIMEOUT="
                f"{format_duration(self.timeout)}); retry later, or raise OLLA_QUEUE_TIMEOUT",
                retry_after=RETRY_AFTER,
            )

    def arm(self, now: float, call_later: CallLater, wake: Callable[[], None]) -> None:
        """Start the timer, once; when it fires the wait is over and `wake` is called."""
        if self.timeout <= 0 or self.timer is not None:
            return

        def fire() -> None:
            self.over = True
            wake()

        self.timer = call_later(max(0.0, self.started + self.timeout - now), fire)

    def cancel(self) -> None:
        """The request has its model (or gave up): the timer is not needed."""
        if self.timer is not None:
            self.timer.cancel()
