"""The one place where errors become HTTP responses: `{"error": "..."}` with the right status,
or, under /v1, OpenAI's error object `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from olla.errors import InvalidRequest, OllaError, Overloaded

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(exc: BaseException) -> tuple[int, dict[str, str]]:
    """Status and JSON body for an exception; also used for the last line of a failed stream."""
    if isinstance(exc, OllaError):
        return exc.status, {"error": exc.message}
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return 413, {"error": "request body too large; the limit is set by OLLA_MAX_REQUEST_BYTES"}
    if isinstance(exc, web.HTTPException):
        return exc.status, {"error": _http_message(exc)}
    return 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}


def _http_message(exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return "not found: no such route; see docs/api.md for the routes olla serves"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"method {exc.method} not allowed here; use {allowed}"
    return exc.reason


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error(status: int, message: str) -> dict[str, Any]:
    """OpenAI's error object for a status and message."""
    kind = _OPENAI_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    code = "model_not_found" if status == 404 and "model" in message else None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def is_openai(request: web.Request) -> bool:
    return request.path.startswith("/v1/")


def error_response(exc: BaseException, openai: bool = False) -> web.Response:
    status, body = error_body(exc)
    if openai:
        body = openai_error(status, body["error"])
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers["Allow"] = ",".join(sorted(exc.allowed_methods))
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render OllaError, aiohttp HTTP errors and bad JSON as `{"error": ...}` responses."""
    try:
        return await handler(request)
    except (OllaError, web.HTTPException) as exc:
        if isinstance(exc, web.HTTPException) and exc.status < 400:
            raise
        _log_request(request, exc)
        return error_response(exc, is_openai(request))
    except ConnectionResetError:
        raise  # the client went away: nothing to answer, nothing to log as a fault
    except json.JSONDecodeError as exc:
        invalid = InvalidRequest(f"request body is not valid JSON: {exc}")
        _log_request(request, invalid)
        return error_response(invalid, is_openai(request))
    except Exception as exc:
        log.exception("unhandled error", extra={"method": request.method, "path": request.path})
        return error_response(exc, is_openai(request))


def _log_request(request: web.Request, exc: BaseException) -> None:
    status, body = error_body(exc)
    level = logging.WARNING if status >= 500 else logging.INFO
    log.log(
        level,
        "%s %s -> %d %s",
        request.method,
        request.path,
        status,
        body["error"],
        extra={"status": status},
    )
