"""NDJSON streaming for /api/* responses."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncGenerator, Callable
from typing import Any

from aiohttp import HttpVersion11, web

from olla.errors import Interrupted, OllaError
from olla.server.middleware import error_body

log = logging.getLogger(__name__)


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
        response = stream_response(request, {"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            if first is not None:
                await _write_line(response, first)
            async for item in items:
                await _write_line(response, item)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            await _error_line(response, exc)
        await response.write_eof()
        return response
    finally:
        await items.aclose()


def stream_response(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    """A response whose body has no length: chunked on HTTP/1.1, ended by closing on HTTP/1.0."""
    response = web.StreamResponse(headers=headers)
    if request.version < HttpVersion11:
        # aiohttp would keep an HTTP/1.0 keep-alive connection open after such a body, and the
        # client could not tell where it ends.
        response.force_close()
    return response


async def _write_line(response: web.StreamResponse, item: dict[str, Any]) -> None:
    await response.write(json.dumps(item, ensure_ascii=False).encode() + b"\n")


def direct_client(request: web.Request) -> int | None:
    """The client's socket, if its answer may be streamed by the runner itself: plain HTTP/1.1
    (chunked), no TLS, nothing still waiting to be sent on it; else None."""
    transport = request.transport
    if transport is None or request.version < HttpVersion11 or transport.is_closing():
        return None
    if transport.get_extra_info("sslcontext") is not None or transport.get_write_buffer_size():
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
        return None
    return int(sock.fileno())


async def respond_direct(
    request: web.Request,
    items: AsyncGenerator[dict[str, Any], None],
    final_line: Callable[[dict[str, Any]], dict[str, Any]],
) -> web.StreamResponse:
    """An NDJSON answer that the runner writes into the client's socket (olla.runtime.handoff).

    The daemon sends the headers, hands the socket over by asking for the runner's next line,
    and writes the `final_line` of the runner's `done` line once the runner has let go of it.
    """
    try:
        await anext(items)  # accepted; errors before it get a proper status
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        response.enable_chunked_encoding()  # the runner writes chunks
        await response.prepare(request)
        await _sent(request)
        try:
            last = None
            async for item in items:  # the first ask hands the socket over
                last = item
            if last is not None:
                await _write_line(response, final_line(last))
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            if isinstance(exc, OllaError) and exc.status == Interrupted.status:
                raise ConnectionResetError(exc.message) from None  # the runner found it gone
            await _error_line(response, exc)
        await response.write_eof()
        return response
    finally:
        await items.aclose()


async def _sent(request: web.Request) -> None:
    """Wait until the transport has given the kernel all it holds (the headers), so that the
    runner's chunks follow them."""
    transport = request.transport
    while transport is not None and transport.get_write_buffer_size():
        if transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        await asyncio.sleep(0.001)


async def _error_line(response: web.StreamResponse, exc: Exception) -> None:
    status, body = error_body(exc)
    log.warning("stream failed after start: %s", body["error"], extra={"status": status})
    await _write_line(response, body)
