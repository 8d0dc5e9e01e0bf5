"""The web page's chat history: one SQLite file under olla's home, every chat owned by a user.

Every method blocks (SQLite on disk): the routes run them with `asyncio.to_thread`. One
connection, shared by the threads under a lock, in WAL mode so a reader never waits on a
writer's fsync. A chat another owner holds is `NotFound`, exactly as one that does not exist,
so an id tells a caller nothing. Search is full-text with SQLite's FTS5 and its trigram
tokenizer (substrings, any case) where this Python's SQLite has them, else LIKE over the same
text; both find the same chats, the first without reading every message.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from olla.errors import NotFound, StorageError
from olla.server.ui_history_format import Chat, Message

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# trigram needs 3 characters to match anything; a shorter query is a LIKE scan
_TRIGRAM = 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS chats (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    title TEXT NOT NULL,
    model TEXT NOT NULL,
    system TEXT NOT NULL,
    options TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS chats_by_owner ON chats (owner, updated_at);
CREATE TABLE IF NOT EXISTS messages (
    chat_id TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    thinking TEXT NOT NULL,
    images TEXT NOT NULL,
    stats TEXT NOT NULL,
    PRIMARY KEY (chat_id, position)
);
"""
_FTS = "CREATE VIRTUAL TABLE chat_text USING fts5(chat_id UNINDEXED, body, tokenize='trigram')"
_SUMMARY = "SELECT id, title, model, created_at, updated_at FROM chats"


class HistoryStore:
    """Chats and their messages in `path`, opened at the first call (so an app that never
    serves the page never makes the file); `clock` gives Unix seconds; `use_fts=False` searches
    with LIKE even where FTS5 is there (tests of that path)."""

    def __init__(
        self, path: Path, clock: Callable[[], float] = time.time, use_fts: bool = True
    ) -> None:
        self.path = path
        self.clock = clock
        self.use_fts = use_fts
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.full_text = False  # whether search uses FTS5 (known once open)

    def chats(self, owner: str, query: str = "") -> list[Chat]:
        """The owner's chats, newest change first, without messages; with `query`, those whose
        title or message text contains it (any case)."""
        with self._lock:
            db = self._open()
            where, args = _matching(query, self.full_text)
            sql = f"{_SUMMARY} WHERE owner = ?{where} ORDER BY updated_at DESC, rowid DESC"
            rows = db.execute(sql, [owner, *args]).fetchall()
        return [
            Chat(id=r[0], title=r[1], model=r[2], created_at=r[3], updated_at=r[4]) for r in rows
        ]

    def get(self, owner: str, chat_id: str) -> Chat:
        """The whole chat; NotFound if the owner has no chat of that id."""
        with self._lock:
            db = self._open()
            row = db.execute(
                "SELECT title, model, system, options, created_at, updated_at FROM chats "
                "WHERE id = ? AND owner = ?",
                (chat_id, owner),
            ).fetchone()
            if row is None:
                raise _not_found(chat_id)
            messages = db.execute(
                "SELECT role, content, thinking, images, stats FROM messages "
                "WHERE chat_id = ? ORDER BY position",
                (chat_id,),
            ).fetchall()
        return Chat(
            title=row[0],
            model=row[1],
            system=row[2],
            options=json.loads(row[3]),
            messages=tuple(
                Message(m[0], m[1], m[2], tuple(json.loads(m[3])), json.loads(m[4]))
                for m in messages
            ),
            id=chat_id,
            created_at=row[4],
            updated_at=row[5],
        )

    def create(self, owner: str, chat: Chat) -> Chat:
        """Save a new chat for `owner` with a fresh random id; its times are now unless it has
        them (an import keeps an exported chat's)."""
        return self.create_many(owner, [chat])[0]

    def create_many(self, owner: str, chats: Iterable[Chat]) -> list[Chat]:
        """`create` for each chat, in one transaction: all are saved or none."""
        now = self.clock()
        made = [
            replace(
                chat,
                id=secrets.token_urlsafe(12),
                created_at=chat.created_at or now,
                updated_at=chat.updated_at or chat.created_at or now,
            )
            for chat in chats
        ]
        with self._lock:
            db = self._open()
            with db:
                for chat in made:
                    db.execute(
                        "INSERT INTO chats VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (chat.id, owner, chat.title, chat.model, chat.system,
                         json.dumps(chat.options), chat.created_at, chat.updated_at),
                    )  # fmt: skip
                    self._write_messages(db, chat)
        return made

    def update(self, owner: str, chat: Chat) -> Chat:
        """Replace the stored chat of `chat.id` with `chat` (messages and all); now is its
        `updated_at`. NotFound if the owner has no chat of that id."""
        chat = replace(chat, updated_at=self.clock())
        with self._lock:
            db = self._open()
            with db:
                changed = db.execute(
                    "UPDATE chats SET title = ?, model = ?, system = ?, options = ?, "
                    "updated_at = ? WHERE id = ? AND owner = ?",
                    (chat.title, chat.model, chat.system, json.dumps(chat.options),
                     chat.updated_at, chat.id, owner),
                ).rowcount  # fmt: skip
                if not changed:
                    raise _not_found(chat.id)
                db.execute("DELETE FROM messages WHERE chat_id = ?", (chat.id,))
                self._write_messages(db, chat)
        return chat

    def delete(self, owner: str, chat_id: str) -> None:
        """Remove the chat and its messages; NotFound if the owner has no chat of that id."""
        with self._lock:
            db = self._open()
            with db:
                found = db.execute(
                    "DELETE FROM chats WHERE id = ? AND owner = ?", (chat_id, owner)
                ).rowcount
                if not found:
                    raise _not_found(chat_id)
                db.execute("DELETE FROM messages WHERE chat_id = ?", (chat_id,))
                if self.full_text:
                    db.execute("DELETE FROM chat_text WHERE chat_id = ?", (chat_id,))

    def close(self) -> None:
        """Close the database (the app's cleanup); a later call opens it again."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _write_messages(self, db: sqlite3.Connection, chat: Chat) -> None:
        db.executemany(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (chat.id, i, m.role, m.content, m.thinking, json.dumps(list(m.images)),
                 json.dumps(m.stats))
                for i, m in enumerate(chat.messages)
            ],
        )  # fmt: skip
        if self.full_text:
            db.execute("DELETE FROM chat_text WHERE chat_id = ?", (chat.id,))
            db.execute("INSERT INTO chat_text VALUES (?, ?)", (chat.id, _search_text(chat)))

    def _open(self) -> sqlite3.Connection:
        """The connection, opened and migrated at the first call; the lock is held."""
        if self._db is not None:
            return self._db
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # the lock serializes every use; check_same_thread would refuse the pool's threads
            db = sqlite3.connect(self.path, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA foreign_keys = ON")
            _migrate(db, self.path)
            self.full_text = self.use_fts and _full_text(db)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the chat history {self.path}: {exc}") from None
        log.info("chat history in %s (search: %s)", self.path, "fts5" if self.full_text else "like")
        self._db = db
        return db


def _matching(query: str, full_text: bool) -> tuple[str, list[str]]:
    """The condition a search adds to the owner's (and its arguments): substrings, any case."""
    if not query.strip():
        return "", []
    if full_text and len(query) >= _TRIGRAM:
        phrase = '"' + query.replace('"', '""') + '"'  # one FTS5 string: no operators
        return " AND id IN (SELECT chat_id FROM chat_text WHERE chat_text MATCH ?)", [phrase]
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    like = f"%{escaped}%"
    where = " AND (title LIKE ? ESCAPE '\\' OR id IN "
    where += "(SELECT chat_id FROM messages WHERE content LIKE ? ESCAPE '\\'))"
    return where, [like, like]


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"the chat history {path} was written by a newer olla (schema {version}, this one "
            f"reads {SCHEMA_VERSION}); upgrade olla or move the file away"
        )
    if version < SCHEMA_VERSION:
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _full_text(db: sqlite3.Connection) -> bool:
    """Whether FTS5 with trigrams works here; made (and filled from the chats) the first time."""
    exists = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'chat_text'").fetchone()
    try:
        if exists:
            db.execute("SELECT 1 FROM chat_text LIMIT 1").fetchall()
            return True
        with db:
            db.execute(_FTS)
            for (chat_id,) in db.execute("SELECT id FROM chats").fetchall():
                db.execute(
                    "INSERT INTO chat_text VALUES (?, ?)", (chat_id, _stored_text(db, chat_id))
                )
    except sqlite3.OperationalError as exc:  # no fts5 module, or no trigram tokenizer
        log.info("SQLite has no FTS5 trigram search (%s): chat search uses LIKE", exc)
        return False
    return True


def _search_text(chat: Chat) -> str:
    return "\n".join([chat.title, *(m.content for m in chat.messages)])


def _stored_text(db: sqlite3.Connection, chat_id: str) -> str:
    title = db.execute("SELECT title FROM chats WHERE id = ?", (chat_id,)).fetchone()[0]
    rows = db.execute(
        "SELECT content FROM messages WHERE chat_id = ? ORDER BY position", (chat_id,)
    ).fetchall()
    return "\n".join([title, *(r[0] for r in rows)])


def _not_found(chat_id: str) -> NotFound:
    return NotFound(f"no chat {chat_id!r} in your history; GET /ui/api/chats lists yours")
