"""The one stream writer: every answer goes out here, whole or as a stream of framed lines.

Errors before the first line get their own status; once a stream has started, an error becomes
its last line in the API's shape (as Ollama and OpenAI do), then the encoder's trailer. A plain
Ollama stream may instead go from the runner straight to the client (`respond_direct`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncGenerator, Callable
from typing import Any

from aiohttp import HttpVersion11, web

from olla.errors import Interrupted, OllaError
from olla.server.middleware import ErrorShape, describe
from olla.stream import ollama
from olla.stream.encoders import NDJSON, Encoder
from olla.wire.messages import Done, Event

log = logging.getLogger(__name__)

Lines = AsyncGenerator[dict[str, Any], None]


async def respond(
    request: web.Request,
    lines: Lines,
    stream: bool,
    encoder: Encoder = NDJSON,
    error_shape: ErrorShape = ollama.error_body,
) -> web.StreamResponse:
    """Send `lines` framed by `encoder`, or only the last one as a JSON body when not streaming.

    `lines` is closed on every way out, so a client that goes away cancels the work behind it.
    """
    try:
        if not stream:
            last: dict[str, Any] = {}
            async for item in lines:
                last = item
            return web.json_response(last)
        first = await anext(lines, None)  # errors before the first line get a proper status
        response = stream_response(request, encoder.headers)
        await response.prepare(request)
        try:
            if first is not None:
                await response.write(encoder.line(first))
            async for item in lines:
                await response.write(encoder.line(item))
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            await response.write(encoder.line(_error_line(exc, error_shape)))
        if encoder.trailer:
            await response.write(encoder.trailer)
        await response.write_eof()
        return response
    finally:
        await lines.aclose()


def stream_response(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    """A response whose body has no length: chunked on HTTP/1.1, ended by closing on HTTP/1.0."""
    response = web.StreamResponse(headers=headers)
    if request.version < HttpVersion11:
        # aiohttp would keep an HTTP/1.0 keep-alive connection open after such a body, and the
        # client could not tell where it ends.
        response.force_close()
    return response


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
    events: AsyncGenerator[Event, None],
    final: Callable[[Done], dict[str, Any]],
) -> web.StreamResponse:
    """An NDJSON answer that the runner writes into the client's socket (olla.runner.direct).

    The daemon sends the headers, hands the socket over by asking for the runner's next event,
    and writes the `final` line for the runner's `Done` once the runner has let go of it.
    """
    try:
        await anext(events)  # Accepted; errors before it get a proper status
        response = web.StreamResponse(headers=NDJSON.headers)
        response.enable_chunked_encoding()  # the runner writes chunks
        await response.prepare(request)
        await _sent(request)
        try:
            last = None
            async for event in events:  # the first ask hands the socket over
                last = event
            if isinstance(last, Done):
                await response.write(NDJSON.line(final(last)))
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            if isinstance(exc, OllaError) and exc.status == Interrupted.status:
                raise ConnectionResetError(exc.message) from None  # the runner found it gone
            await response.write(NDJSON.line(_error_line(exc, ollama.error_body)))
        await response.write_eof()
        return response
    finally:
        await events.aclose()


async def _sent(request: web.Request) -> None:
    """Wait until the transport has given the kernel all it holds (the headers), so that the
    runner's chunks follow them."""
    transport = request.transport
    while transport is not None and transport.get_write_buffer_size():
        if transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        await asyncio.sleep(0.001)


def _error_line(exc: BaseException, shape: ErrorShape) -> dict[str, Any]:
    status, message = describe(exc)
    log.warning("stream failed after start: %s", message, extra={"status": status})
    return shape(status, message)
