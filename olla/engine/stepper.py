"""What a runner drives, declared once: olla's `Engine`, or a backend's own engine that gives its
generator the same face (exllamav2's `GeneratorEngine`)."""

from __future__ import annotations

from typing import Any, Protocol

from olla.engine.engine import StepOutput
from olla.engine.sequence import NewSequence


class Stepper(Protocol):
    """Sequences in, step outputs out; every method is called from the runner's engine thread."""

    @property
    def has_work(self) -> bool: ...

    def add(self, new: NewSequence) -> int:
        """Queue a sequence; its id. InvalidRequest if it cannot be served (prompt too long)."""
        ...

    def abort(self, seq_id: int) -> StepOutput | None:
        """Stop a sequence and free what it holds."""
        ...

    def step(self) -> list[StepOutput]:
        """One batch: what each sequence in it produced."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters and sizes, read from another thread (each read a single attribute)."""
        ...
