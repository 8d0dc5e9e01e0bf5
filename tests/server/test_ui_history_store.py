"""The web page's chat history store (SQLite in a tmp dir) and its JSON and Markdown forms."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from olla.errors import InvalidRequest, NotFound, StorageError
from olla.server.ui_history_format import (
    MAX_MESSAGES,
    MAX_TITLE,
    Chat,
    Message,
    chat_from_json,
    chat_json,
    export_json,
    export_markdown,
    import_chat,
)
from olla.server.ui_history_store import SCHEMA_VERSION, HistoryStore

PIXEL = "iVBORw0KGgo="  # base64 of a PNG's signature: enough to be base64


class Clock:
    """Unix seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=[True, False], ids=["fts5", "like"])
def store(tmp_path: Path, clock: Clock, request: pytest.FixtureRequest) -> Iterator[HistoryStore]:
    """Both ways of searching: each test holds for FTS5 and for LIKE."""
    s = HistoryStore(tmp_path / "home" / "ui.sqlite3", clock=clock, use_fts=request.param)
    yield s
    s.close()


def a_chat(title: str = "Sky", text: str = "Why is the sky blue?") -> Chat:
    return chat_from_json(
        {
            "title": title,
            "model": "smollm2:135m",
            "system": "Be brief.",
            "options": {"temperature": 0.2, "stop": ["###"]},
            "messages": [
                {"role": "user", "content": text, "images": [PIXEL]},
                {
                    "role": "assistant",
                    "content": "Rayleigh scattering.",
                    "thinking": "Light and air.",
                    "stats": {"tokens": 4, "tokens_per_s": 21.5, "ttft_ms": 180},
                },
            ],
        }
    )


def test_create_get_update_delete(store: HistoryStore, clock: Clock) -> None:
    made = store.create("alice", a_chat())
    assert made.id and made.created_at == made.updated_at == clock.now
    got = store.get("alice", made.id)
    assert got == made  # every field, messages with images, thinking and stats, round-trips
    assert got.messages[1].stats == {"tokens": 4, "tokens_per_s": 21.5, "ttft_ms": 180}

    clock.now += 60
    changed = chat_from_json({"title": "Renamed", "messages": []}, got)
    store.update("alice", changed)
    again = store.get("alice", made.id)
    assert (again.title, again.messages, again.model) == ("Renamed", (), "smollm2:135m")
    assert (again.created_at, again.updated_at) == (made.created_at, clock.now)

    store.delete("alice", made.id)
    with pytest.raises(NotFound):
        store.get("alice", made.id)
    with pytest.raises(NotFound):
        store.delete("alice", made.id)
    assert store.chats("alice") == []


def test_list_is_newest_change_first_without_messages(store: HistoryStore, clock: Clock) -> None:
    first = store.create("alice", a_chat("first"))
    clock.now += 1
    second = store.create("alice", a_chat("second"))
    assert [c.title for c in store.chats("alice")] == ["second", "first"]
    clock.now += 1
    store.update("alice", replace(store.get("alice", first.id), title="first, edited"))
    listed = store.chats("alice")
    assert [c.id for c in listed] == [first.id, second.id]
    assert all(c.messages == () for c in listed)


@pytest.mark.parametrize("query", ["IS THE SKY", "sky", "hy", "the sky b", "Sky"])
def test_search_titles_and_message_text_any_case(store: HistoryStore, query: str) -> None:
    hit = store.create("alice", a_chat("Sky", "Why is the sky blue?"))
    store.create("alice", a_chat("Cooking", "How long to boil an egg?"))
    assert [c.id for c in store.chats("alice", query)] == [hit.id]


def test_search_misses_and_quotes_are_text(store: HistoryStore) -> None:
    store.create("alice", a_chat("Sky", 'He said "100% sure_" then'))
    assert store.chats("alice", "grass") == []
    assert len(store.chats("alice", '"100% sure_"')) == 1  # FTS quotes and LIKE wildcards
    assert store.chats("alice", "100%%") == []
    assert store.chats("alice", "Light and air") == []  # thinking is not searched


def test_search_follows_updates_and_deletes(store: HistoryStore) -> None:
    made = store.create("alice", a_chat("Sky", "blue"))
    store.update(
        "alice", chat_from_json({"messages": [{"role": "user", "content": "green"}]}, made)
    )
    assert store.chats("alice", "blue") == [] and len(store.chats("alice", "green")) == 1
    store.delete("alice", made.id)
    assert store.chats("alice", "green") == []


def test_one_owner_never_sees_anothers(store: HistoryStore) -> None:
    mine = store.create("alice", a_chat("Sky"))
    theirs = store.create("bob", a_chat("Sky"))
    assert [c.id for c in store.chats("alice")] == [mine.id]
    assert [c.id for c in store.chats("bob", "sky")] == [theirs.id]
    with pytest.raises(NotFound) as caught:
        store.get("bob", mine.id)
    assert "no chat" in str(caught.value)
    with pytest.raises(NotFound):
        store.update("bob", replace(mine, title="taken"))
    with pytest.raises(NotFound):
        store.delete("bob", mine.id)
    assert store.get("alice", mine.id).title == "Sky"  # untouched by bob's tries


def test_reopened_store_keeps_chats_and_search(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "ui.sqlite3"
    first = HistoryStore(path, clock)
    made = first.create("alice", a_chat())
    first.close()
    second = HistoryStore(path, clock)
    assert second.get("alice", made.id) == made
    assert len(second.chats("alice", "sky")) == 1
    assert second.full_text  # this Python's SQLite has FTS5 with trigrams (3.34+)
    second.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_fts_table_is_filled_when_made_for_old_chats(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "ui.sqlite3"
    store = HistoryStore(path, clock)
    store.create("alice", a_chat("Sky", "blue"))
    store.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE chat_text")  # as a file written where SQLite had no FTS5
    db.commit()
    db.close()
    again = HistoryStore(path, clock)
    assert len(again.chats("alice", "blue")) == 1
    again.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ui.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StorageError, match="newer olla"):
        HistoryStore(path).chats("alice")


def test_export_json_imports_back_to_the_same_chat(store: HistoryStore, clock: Clock) -> None:
    made = store.create("alice", a_chat())
    exported = export_json(store.get("alice", made.id))
    assert "id" not in exported and exported["format"] == "olla-chat/1"
    clock.now += 3600
    back = store.create("bob", import_chat(exported))
    assert back.id != made.id
    assert replace(store.get("bob", back.id), id=made.id) == made  # times kept
    assert chat_json(back)["created_at"] == "2023-11-14T22:13:20.000+00:00"


def test_export_markdown_is_a_transcript() -> None:
    chat = replace(a_chat(), created_at=0, updated_at=0)
    text = export_markdown(chat)
    assert text.startswith("# Sky\n")
    assert "- Model: `smollm2:135m`" in text
    assert "## System\n\nBe brief." in text
    assert "## User\n\n*(1 image attached)*\n\nWhy is the sky blue?" in text
    thinking = "<details><summary>Thinking</summary>\n\nLight and air.\n\n</details>"
    assert f"## Assistant\n\n{thinking}\n\nRayleigh scattering." in text
    assert "*tokens: 4 · tokens_per_s: 21.5 · ttft_ms: 180*" in text
    assert PIXEL not in text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"title": "x" * (MAX_TITLE + 1)}, f"at most {MAX_TITLE}"),
        ({"title": 5}, '"title" must be a string'),
        ({"messages": [{"role": "user"}] * (MAX_MESSAGES + 1)}, f"at most {MAX_MESSAGES}"),
        ({"messages": {"role": "user"}}, '"messages" must be a list'),
        ({"messages": [{"role": "wizard", "content": ""}]}, "messages[0].role must be one of"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content must be a string"),
        ({"messages": [{"role": "user", "images": ["not base64!"]}]}, "images[0] must be base64"),
        ({"messages": [{"role": "user", "stats": {"tokens": [1]}}]}, "stats.tokens must be"),
        ({"options": [1]}, '"options" must be a JSON object'),
    ],
)
def test_bad_chats_are_400s_naming_the_field(body: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        chat_from_json(body)
    assert caught.value.status == 400 and message in str(caught.value)


def test_import_refuses_what_is_not_an_export() -> None:
    with pytest.raises(InvalidRequest, match='"format": "olla-chat/1"'):
        import_chat({"title": "x", "messages": []}, "chats[2]")
    with pytest.raises(InvalidRequest, match="chat.created_at must be an RFC 3339"):
        import_chat({"format": "olla-chat/1", "created_at": "yesterday"})


def test_empty_title_and_defaults() -> None:
    chat = chat_from_json({"title": "  ", "messages": [{"role": "assistant", "content": None}]})
    assert chat.title == "New chat"
    assert chat.messages == (Message("assistant", ""),)
