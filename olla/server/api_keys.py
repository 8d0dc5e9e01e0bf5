"""API keys: `<home>/keys.json`, each key stored only as its sha256, with a name and a role.

A key is 32 random bytes (`olla_` + base64url), so a plain sha256 is enough to keep it from being
read back: there is nothing to brute-force. The CLI (`olla keys`) writes the file, atomically, by
file access (whoever can write the olla home is trusted); the daemon rereads it when it changes,
so a revoked key stops working at its next request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from olla.errors import Conflict, InvalidRequest, NotFound, StorageError

ROLES = ("admin", "user")  # admin: everything; user: generate, chat, embed and reading
_PREFIX = "olla_"


@dataclass(frozen=True)
class ApiKey:
    """One key as stored: never the key itself."""

    name: str
    sha256: str
    role: str
    created: float


class KeyStore:
    """The keys file of an olla home; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: tuple[float, int, dict[str, ApiKey]] | None = None  # (mtime, size, keys)

    def keys(self) -> dict[str, ApiKey]:
        """The keys by name, reread when the file changed."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        with self._lock:
            if self._cache and self._cache[:2] == (stat.st_mtime, stat.st_size):
                return self._cache[2]
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                keys = {k["name"]: ApiKey(**k) for k in raw.get("keys", [])}
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise StorageError(f"the API keys file {self.path} is unreadable: {exc}") from None
            self._cache = (stat.st_mtime, stat.st_size, keys)
            return keys

    def find(self, key: str) -> ApiKey | None:
        """The stored key `key` is, if any (compared in constant time)."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        found = None
        for stored in self.keys().values():
            if hmac.compare_digest(stored.sha256, digest):
                found = stored
        return found

    def add(self, name: str, role: str = "admin") -> str:
        """Make a key called `name`; returns the key, which is shown once and never stored."""
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise InvalidRequest(f"invalid key name {name!r}: use letters, digits, '-', '_', '.'")
        if role not in ROLES:
            raise InvalidRequest(f"invalid role {role!r}: use {' or '.join(ROLES)}")
        keys = dict(self.keys())
        if name in keys:
            raise Conflict(f"a key named {name!r} exists; revoke it first or pick another name")
        key = _PREFIX + secrets.token_urlsafe(32)
        digest = hashlib.sha256(key.encode()).hexdigest()
        keys[name] = ApiKey(name, digest, role, time.time())
        self._write(keys)
        return key

    def revoke(self, name: str) -> None:
        keys = dict(self.keys())
        if keys.pop(name, None) is None:
            raise NotFound(f"no API key named {name!r}; `olla keys list` shows them")
        self._write(keys)

    def _write(self, keys: dict[str, ApiKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        text = json.dumps({"keys": [asdict(k) for k in keys.values()]}, indent=2)
        # 0600 from the start: the hashes are no secret, but nobody else should edit them
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, self.path)
