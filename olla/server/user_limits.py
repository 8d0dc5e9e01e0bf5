"""Per-user limits on generation requests: so many running at once, so many more waiting.

A user is the API key's name, else the client address (`request["user"]`, see auth). Past its
running limit a request waits its turn, first come first served; past its waiting limit it is
refused with 429 and Retry-After. The engine shares the slots fairly among the users whose
requests get through (round-robin admission); these limits keep one user from filling the
model's queue, which all users share, in the first place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from olla.errors import TooManyRequests

log = logging.getLogger(__name__)


@dataclass
class _User:
    running: int = 0
    waiting: int = 0
    turn: asyncio.Condition = field(default_factory=asyncio.Condition)


class UserLimits:
    """Counts each user's generation requests; `max_running` 0 means no limit."""

    def __init__(self, max_running: int, max_waiting: int) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self._users: dict[str, _User] = {}

    @contextlib.asynccontextmanager
    async def hold(self, user: str) -> AsyncIterator[None]:
        """Hold one of `user`'s running places for the block; wait for one, or raise 429."""
        if not self.max_running:
            yield
            return
        state = self._users.setdefault(user, _User())
        if state.running >= self.max_running:
            if state.waiting >= self.max_waiting:
                log.info("user %s over its limits", user, extra={"user": user})
                raise TooManyRequests(
                    f"{user} has {state.running} requests running and {state.waiting} waiting, "
                    f"the most one user may (OLLA_MAX_USER_REQUESTS={self.max_running}, "
                    f"OLLA_MAX_USER_QUEUE={self.max_waiting}); retry when one has finished"
                )
            state.waiting += 1
            try:
                async with state.turn:
                    await state.turn.wait_for(lambda: state.running < self.max_running)
                    state.running += 1
            finally:
                state.waiting -= 1
        else:
            state.running += 1
        try:
            yield
        finally:
            state.running -= 1
            async with state.turn:
                state.turn.notify_all()  # a waiter cancelled meanwhile must not take the wake-up
            if not state.running and not state.waiting:
                self._users.pop(user, None)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Each user with requests: (running, waiting)."""
        return {name: (u.running, u.waiting) for name, u in self._users.items()}
