"""`/ui/api/chats`: the web page's chat history, each user's own (docs/api.md, "Chat history").

The owner is the API key's name (`request["user"]`); with no keys every local client is one
person, "local", so the history is the same from any browser on the machine. Another owner's
chat answers 404, as a missing one does.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp import web

from olla.errors import InvalidRequest
from olla.server.auth import KEY_STORE
from olla.server.bodies import MAX_DEPTH, nests_deeper, read_json
from olla.server.ui_history_format import (
    CHAT_FIELDS,
    Chat,
    chat_from_json,
    chat_json,
    export_json,
    export_markdown,
    import_chat,
    summary_json,
)
from olla.server.ui_history_store import HistoryStore

HISTORY = web.AppKey("ui_history", HistoryStore)
LOCAL_OWNER = "local"
MAX_IMPORT = 1000  # chats in one import
_ID = "{chat_id:[A-Za-z0-9_-]{1,64}}"  # the store's ids are token_urlsafe; others are 404s


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the history routes under /ui/api/chats."""
    router.add_get("/ui/api/chats", list_chats)
    router.add_post("/ui/api/chats", create_chat)
    router.add_post("/ui/api/chats/import", import_chats)
    router.add_get(f"/ui/api/chats/{_ID}", get_chat)
    router.add_put(f"/ui/api/chats/{_ID}", put_chat)
    router.add_delete(f"/ui/api/chats/{_ID}", delete_chat)
    router.add_get(f"/ui/api/chats/{_ID}/export", export_chat)


def owner(request: web.Request) -> str:
    """Whose history a request reads and writes: the key's name, or "local" with no keys."""
    if not request.app[KEY_STORE].keys():
        return LOCAL_OWNER
    return str(request["user"])


async def list_chats(request: web.Request) -> web.Response:
    """`GET /ui/api/chats?q=TEXT`: the caller's chats, newest first; `q` searches them."""
    store = request.app[HISTORY]
    chats = await asyncio.to_thread(store.chats, owner(request), request.query.get("q", ""))
    return web.json_response({"chats": [summary_json(c) for c in chats]})


async def create_chat(request: web.Request) -> web.Response:
    """`POST /ui/api/chats`: save a new chat; 201 with its id."""
    chat = chat_from_json(await read_json(request, CHAT_FIELDS))
    saved = await asyncio.to_thread(request.app[HISTORY].create, owner(request), chat)
    return web.json_response({"id": saved.id}, status=201)


async def get_chat(request: web.Request) -> web.Response:
    """`GET /ui/api/chats/{id}`: the whole chat."""
    chat = await _stored(request)
    return web.json_response(chat_json(chat))


async def put_chat(request: web.Request) -> web.Response:
    """`PUT /ui/api/chats/{id}`: replace the fields the body has; answers the whole chat."""
    body = await read_json(request, CHAT_FIELDS)
    store, who = request.app[HISTORY], owner(request)
    chat = chat_from_json(body, await _stored(request))
    return web.json_response(chat_json(await asyncio.to_thread(store.update, who, chat)))


async def delete_chat(request: web.Request) -> web.Response:
    """`DELETE /ui/api/chats/{id}`: 204."""
    chat_id = request.match_info["chat_id"]
    await asyncio.to_thread(request.app[HISTORY].delete, owner(request), chat_id)
    return web.Response(status=204)


async def export_chat(request: web.Request) -> web.Response:
    """`GET /ui/api/chats/{id}/export?format=json|markdown`: the chat as a download."""
    kind = request.query.get("format", "json")
    if kind not in ("json", "markdown"):
        raise InvalidRequest(f"format must be json or markdown, not {kind!r}")
    chat = await _stored(request)
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", chat.title).strip("-")[:60] or "chat"
    if kind == "json":
        text = json.dumps(export_json(chat), ensure_ascii=False, indent=2) + "\n"
        content_type, name = "application/json", f"{name}.json"
    else:
        text, content_type, name = export_markdown(chat), "text/markdown", f"{name}.md"
    disposition = f'attachment; filename="{name}"'
    return web.Response(
        text=text, content_type=content_type, headers={"Content-Disposition": disposition}
    )


async def import_chats(request: web.Request) -> web.Response:
    """`POST /ui/api/chats/import`: an exported chat, or a list of them; 201 with their ids in
    order. All or none: one bad chat is a 400 naming it, and nothing is saved."""
    body = await _read_json_value(request)
    items = body if isinstance(body, list) else [body]
    if not items or len(items) > MAX_IMPORT:
        raise InvalidRequest(f"import 1 to {MAX_IMPORT} chats at a time, not {len(items)}")
    where = "chat" if not isinstance(body, list) else "chats[{}]"
    chats = [import_chat(item, where.format(i)) for i, item in enumerate(items)]
    saved = await asyncio.to_thread(request.app[HISTORY].create_many, owner(request), chats)
    return web.json_response({"ids": [chat.id for chat in saved]}, status=201)


async def _stored(request: web.Request) -> Chat:
    store, chat_id = request.app[HISTORY], request.match_info["chat_id"]
    return await asyncio.to_thread(store.get, owner(request), chat_id)


async def _read_json_value(request: web.Request) -> Any:
    """A body that may be a JSON list as well as an object (bounded as read_json bounds)."""
    raw = await request.read()  # bounded by the app's client_max_size → 413
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"request body is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest(f"request body nests more than {MAX_DEPTH} levels") from None
    if nests_deeper(body, MAX_DEPTH):
        raise InvalidRequest(f"request body nests more than {MAX_DEPTH} levels")
    return body
