"""The web page's sign-in sessions: an API key exchanged for a random cookie, held in memory.

The page never keeps the key: `POST /ui/api/session` checks it once and answers with an
HttpOnly cookie naming a session. A session is bound to the key it was made with (its name and
its stored hash, so a key revoked, or revoked and made again under the same name, ends it at its
next use) and ends after a week without use. Sessions live in the daemon's memory: a restart
signs everyone out, which is the price of keeping no secret on disk.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from olla.server.api_keys import ApiKey

COOKIE = "olla_session"
IDLE_LIMIT = 7 * 24 * 3600.0  # seconds a session lasts without use
MAX_SESSIONS = 10_000  # beyond it, the least recently used session ends first
UI_HEADER = "X-Olla-UI"  # a cross-site form cannot send a custom header; the page always does
SAFE_METHODS = frozenset({"GET", "HEAD"})


@dataclass
class Session:
    """One signed-in browser: the key's name and hash, and when it was last used."""

    name: str
    key_sha256: str
    role: str
    last_used: float


@dataclass
class SessionStore:
    """Sessions by the sha256 of their token (a lookup leaks nothing of a valid token's bytes).

    Args:
        clock: seconds, monotonic (a seam for tests).
        idle_limit: seconds a session lasts without use.
    """

    clock: Callable[[], float] = time.monotonic
    idle_limit: float = IDLE_LIMIT
    max_sessions: int = MAX_SESSIONS
    _sessions: dict[str, Session] = field(default_factory=dict)

    def create(self, key: ApiKey) -> str:
        """Start a session for `key`; returns its token (the cookie's value), shown once."""
        self._prune()
        token = secrets.token_urlsafe(32)
        self._sessions[_digest(token)] = Session(key.name, key.sha256, key.role, self.clock())
        return token

    def find(self, token: str, keys: Mapping[str, ApiKey]) -> ApiKey | None:
        """The key a live session stands for, marking it used; None (and the session ends)
        when it is unknown, idle too long, or its key was revoked or replaced."""
        digest = _digest(token)
        session = self._sessions.get(digest)
        if session is None:
            return None
        key = keys.get(session.name)
        now = self.clock()
        if key is None or key.sha256 != session.key_sha256 or self._expired(session, now):
            del self._sessions[digest]
            return None
        session.last_used = now
        return key

    def end(self, token: str) -> None:
        """End the session `token` names, if any."""
        self._sessions.pop(_digest(token), None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_used > self.idle_limit

    def _prune(self) -> None:
        """Drop idle sessions; past the cap, also the least recently used ones."""
        now = self.clock()
        for digest, session in list(self._sessions.items()):
            if self._expired(session, now):
                del self._sessions[digest]
        excess = len(self._sessions) - self.max_sessions + 1
        if excess > 0:
            oldest = sorted(self._sessions, key=lambda d: self._sessions[d].last_used)
            for digest in oldest[:excess]:
                del self._sessions[digest]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sends_ui_header(method: str, headers: Mapping[str, str]) -> bool:
    """Whether a request a session cookie authenticates passes the cross-site request check:
    reading (GET, HEAD) always; anything else only with `X-Olla-UI: 1`, which a form or a
    plain cross-site request cannot send (a custom header needs a CORS preflight)."""
    return method.upper() in SAFE_METHODS or headers.get(UI_HEADER, "").strip() == "1"


SESSIONS = web.AppKey("ui_sessions", SessionStore)
