"""Malformed requests to a real daemon: each is a 4xx whose message names the field at fault,
and nothing is lost (the store and the loaded models are as before)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

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
    async with aiohttp.ClientSession(base_url=served.base_url) as s:
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
        {"model": "tiny", "prompt": "Hi", "options": {"temprature": 1}},
        400,
        "temprature",
    ),
    (
        "/api/generate",
        {"model": "tiny", "prompt": "Hi", "max_tokens": 5},
        400,
        'unknown field "max_tokens"',
    ),
    ("/api/generate", {"model": "tiny", "prompt": "Hi", "images": ["aGk="]}, 400, '"images"'),
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
