"""The one place where errors become HTTP responses: the status from the error's class, the body
in the shape of the API the route belongs to (Ollama's `{"error": "..."}`, OpenAI's error object
under /v1, Anthropic's under /v1/messages)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from olla.errors import InvalidRequest, OllaError, Overloaded
from olla.stream import anthropic, ollama, openai

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorShape = Callable[[int, str], dict[str, Any]]  # an API's error body for a status and message


def describe(exc: BaseException) -> tuple[int, str]:
    """The status and message for an exception; also for the last line of a failed stream."""
    if isinstance(exc, OllaError):
        return exc.status, exc.message
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return 413, "request body too large; the limit is set by OLLA_MAX_REQUEST_BYTES"
    if isinstance(exc, web.HTTPException):
        return exc.status, _http_message(exc)
    return 500, f"internal error: {type(exc).__name__}: {exc}"


def _http_message(exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return "not found: no such route; see docs/api.md for the routes olla serves"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"method {exc.method} not allowed here; use {allowed}"
    return exc.reason


def error_shape(request: web.Request) -> ErrorShape:
    """The error body of the API that `request`'s route belongs to."""
    if request.path == "/v1/messages" or request.path.startswith("/v1/messages/"):
        return anthropic.error_body
    return openai.error_body if request.path.startswith("/v1/") else ollama.error_body


def error_response(exc: BaseException, shape: ErrorShape = ollama.error_body) -> web.Response:
    status, message = describe(exc)
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers["Allow"] = ",".join(sorted(exc.allowed_methods))
    return web.json_response(shape(status, message), status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render OllaError, aiohttp HTTP errors and bad JSON as the API's error body."""
    try:
        return await handler(request)
    except (OllaError, web.HTTPException) as exc:
        if isinstance(exc, web.HTTPException) and exc.status < 400:
            raise
        _log_request(request, exc)
        return error_response(exc, error_shape(request))
    except ConnectionResetError:
        raise  # the client went away: nothing to answer, nothing to log as a fault
    except json.JSONDecodeError as exc:
        invalid = InvalidRequest(f"request body is not valid JSON: {exc}")
        _log_request(request, invalid)
        return error_response(invalid, error_shape(request))
    except Exception as exc:
        log.exception("unhandled error", extra={"method": request.method, "path": request.path})
        return error_response(exc, error_shape(request))


def _log_request(request: web.Request, exc: BaseException) -> None:
    status, message = describe(exc)
    level = logging.WARNING if status >= 500 else logging.INFO
    log.log(
        level,
        "%s %s -> %d %s",
        request.method,
        request.path,
        status,
        message,
        extra={"status": status},
    )
