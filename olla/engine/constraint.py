"""Constraints on what a sequence may generate next (a grammar, for structured outputs).

The sampler draws as usual, then asks the sequence's constraint whether the token is allowed;
only when it is not does it mask the whole row and draw again. Most tokens of a JSON answer
are allowed as drawn, so the full-vocabulary check runs on a few steps, not every one.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt


class Constraint(Protocol):
    """Per-sequence state that decides which tokens may come next."""

    def allows(self, token: int) -> bool:
        """Whether `token` may come next."""
        ...

    def mask(self, logits: npt.NDArray[np.float32]) -> None:
        """Set the logit of every token that may not come next to -inf, in place."""
        ...

    def accept(self, token: int) -> None:
        """Advance past `token`, which `allows` admitted."""
        ...

    def close(self) -> None:
        """Free what the constraint holds (native memory)."""
        ...


class AllowedTokens:
    """A constraint that admits a fixed set of tokens: for tests and simple choices."""

    def __init__(self, allowed: set[int]) -> None:
        self.allowed = allowed
        self.accepted: list[int] = []

    def allows(self, token: int) -> bool:
        return token in self.allowed

    def mask(self, logits: npt.NDArray[np.float32]) -> None:
        keep = np.zeros(logits.shape[-1], dtype=bool)
        keep[[t for t in self.allowed if t < len(keep)]] = True
        logits[~keep] = -np.inf

    def accept(self, token: int) -> None:
        self.accepted.append(token)

    def close(self) -> None:
        pass
