"""Malformed requests to a real daemon: each is a 4xx whose message names the field at fault,
and nothing is lost (the store and the loaded models are as before)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from olla.backends.schema_limits import SchemaLimits
from olla.config import Settings
from olla.server.app import make_app
from olla.server.bodies import MAX_DEPTH, nests_deeper
from olla.server.keys import MANAGER
from tests.conftest import Daemon, make_daemon
from tests.daemon_helpers import create_tiny


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Daemon]:
    d = make_daemon(tmp_path_factory.mktemp("malformed"))
    d.start()
    asyncio.run(create_tiny(d, smollm2_gguf))
    yield d
    d.stop()


@pytest.fixture
async def session(served: Daemon) -> AsyncIterator[aiohttp.ClientSession]:
    # the web page's header: its routes refuse a state-changing call without it (a 403)
    async with aiohttp.ClientSession(base_url=served.base_url, headers={"X-Olla-UI": "1"}) as s:
        yield s


CASES: list[tuple[str, Any, int, str]] = [
    ("/api/generate", b"{not json", 400, "not valid JSON"),
    ("/api/generate", b'{"model": "\xff"}', 400, "not UTF-8 JSON"),
    ("/api/generate", {"model": "tiny", "prompt": "Hi", "keep_alive": {}}, 400, '"keep_alive"'),
    (
        "/api/generate",
        {"model": "tiny", "prompt": "Hi", "options": {"num_thread": 10**6}},
        400,
        '"num_thread"',
    ),
    (
        "/api/create",
        {"model": "x", "from": "tiny", "quantize": "q3_fancy"},
        400,
        "unknown quantization",
    ),
    ("/api/generate", [1, 2], 400, "JSON object"),
    ("/api/generate", {"model": 7, "prompt": "Hi"}, 400, '"model"'),
    ("/api/generate", {"model": "tiny", "prompt": 5}, 400, '"prompt"'),
    ("/api/generate", {"model": "tiny", "prompt": "Hi", "stream": "yes"}, 400, '"stream"'),
    (
        "/api/generate",
        {"model": "tiny", "prompt": "Hi", "options": {"num_predict": -9}},
        400,
        "num_predict",
    ),
    (
        "/api/generate",
        {"model": "tiny", "prompt": "Hi", "options": {"num_ctx": 10**9}},
        400,
        '"num_ctx"',
    ),
    (
        "/api/generate",
        {"model": "tiny", "prompt": "Hi", "options": {"temperature": "hot", "newer": 1}},
        400,
        "temperature",
    ),
    ("/api/generate", {"model": "tiny", "prompt": "Hi", "images": "aGk="}, 400, "images must be"),
    ("/api/generate", {"model": "tiny", "prompt": "Hi", "images": ["aGk="]}, 400, "vision"),
    ("/api/generate", {"model": "tiny", "prompt": "Hi", "think": True}, 400, '"think"'),
    (
        "/api/chat",
        {"model": "tiny", "messages": [{"role": "robot", "content": "Hi"}]},
        400,
        "messages[0].role",
    ),
    ("/api/chat", {"model": "tiny", "messages": "Hi"}, 400, '"messages"'),
    ("/api/chat", {"model": "tiny", "messages": [], "keep_alive": "forever"}, 400, '"keep_alive"'),
    ("/api/embed", {"model": "tiny", "input": 3}, 400, '"input"'),
    ("/api/embed", {"model": "tiny", "input": "Hi", "dimensions": 0}, 400, '"dimensions"'),
    ("/api/create", {"model": "x", "from": "tiny", "parameters": {"top_k": "many"}}, 400, "top_k"),
    ("/api/copy", {"source": "tiny"}, 400, '"destination"'),
    (
        "/v1/chat/completions",
        {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": -1},
        400,
        '"max_tokens"',
    ),
    (
        "/v1/chat/completions",
        {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "temperature": "hot"},
        400,
        '"temperature"',
    ),
    (
        "/v1/chat/completions",
        {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "n": 2},
        400,
        '"n"',
    ),
    (
        "/v1/chat/completions",
        {
            "model": "tiny",
            "messages": [{"role": "user", "content": "Hi"}],
            "response_format": {"type": "xml"},
        },
        400,
        "response_format",
    ),
    ("/v1/completions", {"model": "tiny", "prompt": ["a", "b"]}, 400, '"prompt"'),
    (
        "/v1/embeddings",
        {"model": "tiny", "input": "Hi", "encoding_format": "hex"},
        400,
        '"encoding_format"',
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "named"), CASES)
async def test_a_malformed_body_is_a_4xx_that_names_the_field(
    session: aiohttp.ClientSession, path: str, body: Any, status: int, named: str
) -> None:
    payload = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with session.post(path, **payload) as r:
        reply = await r.json(content_type=None)
        assert r.status == status, reply
    message = reply["error"]["message"] if path.startswith("/v1/") else reply["error"]
    assert named in message, message


async def test_an_oversized_body_is_a_413(session: aiohttp.ClientSession) -> None:
    async with session.post("/api/generate", data=b"x" * (17 * 1024 * 1024)) as r:
        assert r.status == 413
        assert "OLLA_MAX_REQUEST_BYTES" in (await r.json())["error"]
    async with session.get("/api/tags") as r:  # the daemon is fine afterwards
        assert r.status == 200 and [m["name"] for m in (await r.json())["models"]] == [
            "tiny:latest"
        ]


async def test_olla_load_options_are_accepted(session: aiohttp.ClientSession) -> None:
    options = {"num_predict": 1, "flash_attention": False, "kv_cache_type": "f16"}
    body = {"model": "tiny", "prompt": "Hi", "stream": False, "keep_alive": "", "options": options}
    async with session.post("/api/generate", json=body) as r:
        assert r.status == 200, await r.text()


async def test_unknown_fields_and_options_are_ignored_as_ollama_ignores_them(
    session: aiohttp.ClientSession, served: Daemon
) -> None:
    """Clients send fields and options newer than the server (Ollama ignores them): each route
    answers, and the request's log line names what was ignored."""
    options = {"num_predict": 1, "temperature": 0, "draft_num_predict": 4, "from_the_future": 1}
    generate = {"model": "tiny", "prompt": "Hi", "stream": False, "max_tokens": 5}
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "stream": False}
    openai = {**chat, "verbosity": "low", "max_tokens": 1}
    for path, body in [
        ("/api/generate", {**generate, "options": options}),
        ("/api/chat", {**chat, "options": options, "n": 2}),
        ("/api/embed", {"model": "tiny", "input": "Hi", "options": options, "encoding": "x"}),
        ("/v1/chat/completions", openai),
    ]:
        async with session.post(path, json=body) as r:
            assert r.status == 200, (path, await r.text())
    log = served.log()
    assert 'ignored=["field max_tokens", "option from_the_future"]' in log
    assert 'ignored=["field verbosity"]' in log


# Every route that reads a JSON body, and a field of it that takes the deep value
BODY_ROUTES = [
    ("POST", "/api/generate", "prompt"),
    ("POST", "/api/chat", "messages"),
    ("POST", "/api/show", "model"),
    ("POST", "/api/create", "from"),
    ("POST", "/api/pull", "model"),
    ("POST", "/api/copy", "source"),
    ("DELETE", "/api/delete", "model"),
    ("POST", "/api/embed", "input"),
    ("POST", "/api/embeddings", "prompt"),
    ("POST", "/v1/chat/completions", "messages"),
    ("POST", "/v1/completions", "prompt"),
    ("POST", "/v1/embeddings", "input"),
    ("POST", "/v1/responses", "input"),
    ("POST", "/v1/messages", "messages"),
    ("POST", "/v1/messages/count_tokens", "messages"),
    ("POST", "/ui/api/session", "key"),
    ("POST", "/ui/api/chats", "messages"),
    ("POST", "/ui/api/chats/import", "messages"),
]


def with_deep(field: str, levels: int) -> str:
    """A body whose `field` holds arrays `levels` deep (the body itself is one level more)."""
    return "{" + json.dumps(field) + ": " + "[" * levels + "]" * levels + "}"


async def test_every_route_that_reads_a_body_is_listed(tmp_path: Path) -> None:
    app = make_app(Settings(models=tmp_path / "models"))
    await app[MANAGER].close()  # it made a directory for runner sockets
    reads = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method in ("POST", "DELETE") and route.resource is not None
    }
    raw_or_none = {
        ("POST", "/api/blobs/{digest}"),
        ("POST", "/api/push"),
        ("DELETE", "/ui/api/session"),
        ("DELETE", "/ui/api/chats/{chat_id}"),
    }
    assert reads - raw_or_none == {(method, path) for method, path, _ in BODY_ROUTES}


@pytest.mark.parametrize(("method", "path", "field"), BODY_ROUTES)
async def test_a_body_nested_too_deep_is_a_400_on_every_route(
    session: aiohttp.ClientSession, method: str, path: str, field: str
) -> None:
    # one level past the limit, and past what json.loads follows (a 500 RecursionError before)
    for levels in (MAX_DEPTH, 100_000):
        headers = {"Content-Type": "application/json"}
        async with session.request(
            method, path, data=with_deep(field, levels), headers=headers
        ) as r:
            reply = await r.json(content_type=None)
            assert r.status == 400, reply
        message = reply["error"]["message"] if path.startswith("/v1/") else reply["error"]
        assert f"more than {MAX_DEPTH} levels deep" in message, message
    async with session.request(method, path, data=with_deep(field, MAX_DEPTH - 1)) as r:
        reply = await r.json(content_type=None)  # at the limit: refused for other reasons
        assert r.status == 400 and "levels deep" not in json.dumps(reply), reply


def array_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema, "maxItems": 1}
    return schema


async def test_bodies_at_the_limit_are_served(session: aiohttp.ClientSession) -> None:
    """Tool-call arguments as deep as a body may nest go through the template and the runner;
    a schema that deep is past the grammar's own bound, a clean 400 that says so, and one at
    that bound is served: nothing further on recurses too far."""
    greedy = {"temperature": 0, "num_predict": 3}
    body = {"model": "tiny", "prompt": "Hi", "stream": False, "options": greedy}
    deep_format = {**body, "format": array_schema(MAX_DEPTH - 2)}
    arguments: Any = 1
    for _ in range(MAX_DEPTH - 6):  # in the body, messages, [1], tool_calls, [0], function
        arguments = {"k": arguments}
    call = {"function": {"name": "f", "arguments": arguments}}
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
    ]
    deep_chat = {"model": "tiny", "messages": messages, "stream": False, "options": greedy}
    for deep in (deep_format, deep_chat):
        assert nests_deeper(deep, MAX_DEPTH - 1) and not nests_deeper(deep, MAX_DEPTH)
    async with session.post("/api/chat", json=deep_chat) as r:
        assert r.status == 200, await r.text()
    async with session.post("/api/generate", json=deep_format) as r:
        assert r.status == 400
        assert "nests more than 64 levels" in (await r.json())["error"]
    within = {**body, "format": array_schema(SchemaLimits().depth)}
    async with session.post("/api/generate", json=within) as r:
        assert r.status == 200, await r.text()
