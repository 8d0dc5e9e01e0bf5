"""/ui/api/chats on a real daemon: each API key's history is its own; with no keys, "local"."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from tests.conftest import Daemon

CHAT = {
    "title": "Sky question",
    "model": "smollm2:135m",
    "system": "Be brief.",
    "options": {"temperature": 0.2},
    "messages": [
        {"role": "user", "content": "Why is the sky blue?"},
        {
            "role": "assistant",
            "content": "Rayleigh scattering.",
            "thinking": "Short light waves scatter more.",
            "stats": {"tokens": 4, "tokens_per_s": 20.0, "ttft_ms": 150},
        },
    ],
}


async def call(
    d: Daemon, method: str, path: str, key: str | None = None, **kw: Any
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession(base_url=d.base_url) as session:
        async with session.request(method, path, headers=headers, **kw) as r:
            text = await r.text()
            body = json.loads(text) if r.content_type == "application/json" and text else text
            return r.status, body, r.headers


def add_key(d: Daemon, name: str) -> str:
    made = subprocess.run(
        [sys.executable, "-m", "olla", "keys", "add", name],
        env=d.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def owners(d: Daemon) -> list[str]:
    db = sqlite3.connect(Path(d.env["OLLA_HOME"]) / "ui.sqlite3")
    try:
        return [row[0] for row in db.execute("SELECT owner FROM chats ORDER BY owner")]
    finally:
        db.close()


async def test_history_round_trip_without_keys_is_the_local_owners(daemon: Daemon) -> None:
    status, made, _ = await call(daemon, "POST", "/ui/api/chats", json=CHAT)
    assert status == 201
    chat_id = made["id"]
    status, whole, _ = await call(daemon, "GET", f"/ui/api/chats/{chat_id}")
    assert status == 200
    assert {k: whole[k] for k in CHAT} == CHAT
    assert whole["id"] == chat_id and whole["created_at"] == whole["updated_at"]

    status, listed, _ = await call(daemon, "GET", "/ui/api/chats", params={"q": "SKY BLUE"})
    assert status == 200 and [c["id"] for c in listed["chats"]] == [chat_id]
    assert set(listed["chats"][0]) == {"id", "title", "model", "created_at", "updated_at"}
    assert (await call(daemon, "GET", "/ui/api/chats", params={"q": "grass"}))[1] == {"chats": []}

    status, renamed, _ = await call(
        daemon, "PUT", f"/ui/api/chats/{chat_id}", json={"title": "Renamed"}
    )
    assert status == 200 and renamed["title"] == "Renamed"
    assert renamed["messages"] == CHAT["messages"]  # a PUT replaces only what it sends

    status, exported, headers = await call(
        daemon, "GET", f"/ui/api/chats/{chat_id}/export", params={"format": "json"}
    )
    assert status == 200 and exported["format"] == "olla-chat/1" and "id" not in exported
    assert headers["Content-Disposition"] == 'attachment; filename="Renamed.json"'
    status, text, headers = await call(
        daemon, "GET", f"/ui/api/chats/{chat_id}/export", params={"format": "markdown"}
    )
    assert status == 200 and headers["Content-Type"].startswith("text/markdown")
    assert text.startswith("# Renamed\n") and "## Assistant" in text
    assert headers["Content-Disposition"] == 'attachment; filename="Renamed.md"'

    status, imported, _ = await call(
        daemon, "POST", "/ui/api/chats/import", json=[exported, exported]
    )
    assert status == 201 and len(imported["ids"]) == 2 and chat_id not in imported["ids"]
    copy = (await call(daemon, "GET", f"/ui/api/chats/{imported['ids'][0]}"))[1]
    assert copy["messages"] == CHAT["messages"] and copy["created_at"] == whole["created_at"]

    assert (await call(daemon, "DELETE", f"/ui/api/chats/{chat_id}"))[0] == 204
    assert (await call(daemon, "GET", f"/ui/api/chats/{chat_id}"))[0] == 404
    assert owners(daemon) == ["local", "local"]  # the fixed owner, not the client address


async def test_bad_requests_are_clear_400s_and_404s(daemon: Daemon) -> None:
    status, body, _ = await call(daemon, "POST", "/ui/api/chats", json={"title": "x" * 201})
    assert status == 400 and "at most 200" in body["error"]
    bad_role = {"messages": [{"role": "wizard", "content": "hi"}]}
    status, body, _ = await call(daemon, "POST", "/ui/api/chats", json=bad_role)
    assert status == 400 and "messages[0].role" in body["error"]
    status, body, _ = await call(daemon, "POST", "/ui/api/chats", data=b"[1]")
    assert status == 400 and "JSON object" in body["error"]
    status, body, _ = await call(daemon, "POST", "/ui/api/chats/import", json={"title": "x"})
    assert status == 400 and "not an exported olla chat" in body["error"]
    status, body, _ = await call(daemon, "POST", "/ui/api/chats/import", json=[])
    assert status == 400 and "import 1 to" in body["error"]
    status, body, _ = await call(daemon, "GET", "/ui/api/chats/nope")
    assert status == 404 and "no chat 'nope'" in body["error"]
    made = (await call(daemon, "POST", "/ui/api/chats", json=CHAT))[1]
    path = f"/ui/api/chats/{made['id']}/export"
    status, body, _ = await call(daemon, "GET", path, params={"format": "pdf"})
    assert status == 400 and "json or markdown" in body["error"]


async def test_each_key_sees_only_its_own_chats(daemon: Daemon) -> None:
    alice, bob = add_key(daemon, "alice"), add_key(daemon, "bob")
    assert (await call(daemon, "GET", "/ui/api/chats"))[0] == 401  # keys exist: a key is needed
    status, made, _ = await call(daemon, "POST", "/ui/api/chats", key=alice, json=CHAT)
    assert status == 201
    mine = f"/ui/api/chats/{made['id']}"

    assert (await call(daemon, "GET", "/ui/api/chats", key=bob))[1] == {"chats": []}
    params = {"q": "sky"}
    assert (await call(daemon, "GET", "/ui/api/chats", key=bob, params=params))[1] == {"chats": []}
    assert (await call(daemon, "GET", mine, key=bob))[0] == 404
    assert (await call(daemon, "PUT", mine, key=bob, json={"title": "taken"}))[0] == 404
    assert (await call(daemon, "GET", f"{mine}/export", key=bob))[0] == 404
    assert (await call(daemon, "DELETE", mine, key=bob))[0] == 404

    status, listed, _ = await call(daemon, "GET", "/ui/api/chats", key=alice, params=params)
    assert [c["id"] for c in listed["chats"]] == [made["id"]]
    assert (await call(daemon, "GET", mine, key=alice))[1]["title"] == "Sky question"

    exported = (await call(daemon, "GET", f"{mine}/export", key=alice))[1]
    status, imported, _ = await call(daemon, "POST", "/ui/api/chats/import", key=bob, json=exported)
    assert status == 201
    bobs = (await call(daemon, "GET", "/ui/api/chats", key=bob))[1]["chats"]
    assert [c["id"] for c in bobs] == imported["ids"]  # bob's copy is bob's, alice's stays hers
    assert owners(daemon) == ["alice", "bob"]
