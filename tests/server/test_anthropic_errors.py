"""Errors under /v1/messages in Anthropic's shape: before a stream, as the body with its status;
after it started, as an `event: error` (the writer and the middleware, on a bare app)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from olla.errors import ModelNotFound, Overloaded, RequestTimeout
from olla.server.middleware import error_middleware
from olla.server.writer import respond
from olla.stream import anthropic
from olla.stream.encoders import NAMED_SSE


async def _failing_stream() -> AsyncGenerator[dict[str, Any], None]:
    yield {"type": "message_start", "message": {}}
    raise RequestTimeout("the generation ran over 1s")


async def _streamed(request: web.Request) -> web.StreamResponse:
    return await respond(request, _failing_stream(), True, NAMED_SSE, anthropic.error_body)


async def _missing(request: web.Request) -> web.StreamResponse:
    raise ModelNotFound("nope")


async def _busy(request: web.Request) -> web.StreamResponse:
    raise Overloaded("busy", retry_after=3)


def _app() -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/v1/messages", _streamed)
    app.router.add_post("/v1/messages/count_tokens", _missing)
    app.router.add_post("/v1/chat/completions", _missing)
    app.router.add_post("/v1/messages/busy", _busy)
    return app


async def test_errors_by_path_and_after_a_stream_started() -> None:
    async with TestClient(TestServer(_app())) as client:
        r = await client.post("/v1/messages/count_tokens")
        assert r.status == 404
        assert await r.json() == {
            "type": "error",
            "error": {"type": "not_found_error", "message": ModelNotFound("nope").message},
        }
        r = await client.post("/v1/chat/completions")  # OpenAI's shape stays OpenAI's
        assert (await r.json())["error"]["type"] == "invalid_request_error"
        r = await client.post("/v1/messages/busy")
        assert r.status == 503 and r.headers["Retry-After"] == "3"
        assert (await r.json())["error"]["type"] == "overloaded_error"

        r = await client.post("/v1/messages")
        assert r.status == 200
        events = (await r.text()).strip().split("\n\n")
        assert events[0].startswith("event: message_start\ndata: ")
        name, data = events[-1].split("\n")
        assert name == "event: error" and len(events) == 2  # no [DONE] after it
        error = json.loads(data.removeprefix("data: "))
        assert error == {
            "type": "error",
            "error": {"type": "timeout_error", "message": "the generation ran over 1s"},
        }
