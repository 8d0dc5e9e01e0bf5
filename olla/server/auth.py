"""Who may call: API keys (when any exist) and browser origins (CORS).

With no keys, olla is open to whoever can reach it (loopback by default, as Ollama). Once a key
exists, every route but `GET /` and `/api/version` needs `Authorization: Bearer <key>` (or
Anthropic's `x-api-key: <key>`); a read-only ("user") key may generate, chat, embed and read,
an admin key may also change the store. The caller's name (the key's, else the client address)
is `request["user"]`, for logs and fair sharing.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from olla.errors import Forbidden, Unauthorized
from olla.server.api_keys import KeyStore

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEY_STORE = web.AppKey("key_store", KeyStore)
ORIGINS = web.AppKey("origins", tuple)

_OPEN = {("GET", "/"), ("HEAD", "/"), ("GET", "/api/version"), ("HEAD", "/api/version")}
# What a read-only key may do: use models and read what is there
_USER = {
    ("POST", "/api/generate"),
    ("POST", "/api/chat"),
    ("POST", "/api/embed"),
    ("POST", "/api/embeddings"),
    ("POST", "/api/show"),
    ("GET", "/api/tags"),
    ("GET", "/api/ps"),
}
# Ollama's defaults: any port of the local host, and the schemes of desktop apps
_LOCAL_ORIGINS = re.compile(
    r"(https?://(localhost|127\.0\.0\.1|\[::1\]|0\.0\.0\.0)(:\d+)?|(app|file|tauri)://.*)"
)


def user_may(method: str, path: str) -> bool:
    """Whether a read-only key may call `method path` (every /v1 route uses models)."""
    return (method, path) in _USER or path.startswith("/v1/")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the API key when keys exist; name the caller in `request["user"]`."""
    store = request.app[KEY_STORE]
    keys = store.keys()
    if not keys or (request.method, request.path) in _OPEN:
        request["user"] = request.remote or "local"
        return await handler(request)
    token = _token(request)
    if not token:
        raise Unauthorized(
            "this olla needs an API key: send `Authorization: Bearer <key>` or `x-api-key: "
            "<key>` (the CLI sends OLLA_API_KEY); the operator makes one with `olla keys add NAME`"
        )
    key = store.find(token)
    if key is None:
        raise Unauthorized("unknown or revoked API key; ask the operator for a valid one")
    if key.role != "admin" and not user_may(request.method, request.path):
        raise Forbidden(
            f"API key {key.name!r} is read-only: {request.method} {request.path} needs an "
            "admin key (`olla keys add NAME` without --read-only)"
        )
    request["user"] = key.name
    return await handler(request)


def _token(request: web.Request) -> str:
    """The key a request sends: `Authorization: Bearer <key>`, else Anthropic's `x-api-key`."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key", "").strip()


def origin_allowed(origin: str, extra: tuple[str, ...]) -> bool:
    """Local origins always; others when they match an OLLA_ORIGINS entry (`*` globs)."""
    if _LOCAL_ORIGINS.fullmatch(origin):
        return True
    return any(fnmatch.fnmatchcase(origin, pattern) for pattern in extra)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer preflights, add CORS headers for allowed origins, refuse the others (403)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return await handler(request)
    if not origin_allowed(origin, request.app[ORIGINS]):
        message = f"origin {origin} is not allowed; add it to OLLA_ORIGINS"
        return web.json_response({"error": message}, status=403)
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        asked = request.headers.get("Access-Control-Request-Headers", "")
        headers.update(
            {
                "Access-Control-Allow-Methods": "GET, POST, DELETE, HEAD, OPTIONS",
                "Access-Control-Allow-Headers": asked or "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
            }
        )
        return web.Response(status=204, headers=headers)
    response = await handler(request)
    response.headers.update(headers)
    return response
