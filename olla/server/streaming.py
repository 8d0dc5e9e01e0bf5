"""NDJSON streaming for /api/* responses."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Collection
from typing import Any

from aiohttp import web

from olla.errors import InvalidRequest
from olla.server.middleware import error_body

log = logging.getLogger(__name__)


async def read_json(request: web.Request, fields: Collection[str] | None = None) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is `{}` (as Ollama allows for GETs).

    With `fields`, a key outside them is a 400 that names it (a typo must not pass unnoticed).
    """
    raw = await request.read()  # bounded by the app's client_max_size → 413
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"request body is not UTF-8 JSON: {exc.reason} at byte {exc.start}"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    unknown = sorted(set(body) - set(fields)) if fields is not None else []
    if unknown:
        raise InvalidRequest(
            f'unknown field "{unknown[0]}" for {request.method} {request.path}; '
            f"it takes: {', '.join(sorted(fields or ()))}"
        )
    return body


async def respond(
    request: web.Request, items: AsyncGenerator[dict[str, Any], None], stream: bool
) -> web.StreamResponse:
    """Send `items` as NDJSON lines, or only the last one as a JSON response when not streaming.

    Once streaming has started, an error becomes a final `{"error": ...}` line, as Ollama does.
    `items` is closed on every way out, so a client that goes away cancels the work behind it.
    """
    try:
        if not stream:
            last: dict[str, Any] = {}
            async for item in items:
                last = item
            return web.json_response(last)
        first = await anext(items, None)  # errors before the first line get a proper status
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            if first is not None:
                await _write_line(response, first)
            async for item in items:
                await _write_line(response, item)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            status, body = error_body(exc)
            log.warning("stream failed after start: %s", body["error"], extra={"status": status})
            await _write_line(response, body)
        await response.write_eof()
        return response
    finally:
        await items.aclose()


async def _write_line(response: web.StreamResponse, item: dict[str, Any]) -> None:
    await response.write(json.dumps(item, ensure_ascii=False).encode() + b"\n")
