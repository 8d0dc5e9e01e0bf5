"""Who may call: API keys (when any exist) and browser origins (CORS).

With no keys, olla is open to whoever can reach it (loopback by default, as Ollama). Once a key
exists, every route but `GET /` and `/api/version` needs `Authorization: Bearer <key>` (or
Anthropic's `x-api-key: <key>`); a read-only ("user") key may generate, chat, embed and read,
an admin key may also change the store. The caller's name (the key's, else the client address)
is `request["user"]`, for logs and fair sharing; its role is `request["role"]`.

The web page signs in once with a key and then sends a session cookie instead
(`server/ui_sessions.py`): the cookie stands for that key on every route, with the same role
checks, but a cookie is sent by the browser on its own, so anything but GET and HEAD also needs
the header `X-Olla-UI: 1` (a cross-site form cannot send it).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from olla.errors import Forbidden, Unauthorized
from olla.server.api_keys import ApiKey, KeyStore
from olla.server.ui_sessions import COOKIE, SESSIONS, UI_HEADER, sends_ui_header

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEY_STORE = web.AppKey("key_store", KeyStore)
ORIGINS = web.AppKey("origins", tuple)

_OPEN = {("GET", "/"), ("HEAD", "/"), ("GET", "/api/version"), ("HEAD", "/api/version")}
# Signing in and out of the web page: the handlers check the key and the UI header themselves
_OPEN_SESSION = {("POST", "/ui/api/session"), ("DELETE", "/ui/api/session")}
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
    """Whether a read-only key may call `method path` (every /v1 route uses models; the page's
    own routes are per user)."""
    return (method, path) in _USER or path.startswith(("/v1/", "/ui/api/"))


def is_open(method: str, path: str) -> bool:
    """Whether `method path` is answered without a key: the health checks, the web page and
    its files (they hold no data), signing in and out."""
    if (method, path) in _OPEN or (method, path) in _OPEN_SESSION:
        return True
    page = path in ("/ui", "/ui/") or path.startswith("/ui/static/")
    return page and method in ("GET", "HEAD")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the API key (or the page's session) when keys exist; name the caller in
    `request["user"]` and its role in `request["role"]`."""
    keys = request.app[KEY_STORE].keys()
    if not keys or is_open(request.method, request.path):
        request["user"] = request.remote or "local"
        request["role"] = "admin" if not keys else None
        return await handler(request)
    key = _caller(request, keys)
    if key.role != "admin" and not user_may(request.method, request.path):
        raise Forbidden(
            f"API key {key.name!r} is read-only: {request.method} {request.path} needs an "
            "admin key (`olla keys add NAME` without --read-only)"
        )
    request["user"] = key.name
    request["role"] = key.role
    return await handler(request)


def _caller(request: web.Request, keys: dict[str, ApiKey]) -> ApiKey:
    """The key a request comes with: its own header, else the page's session cookie."""
    token = _token(request)
    if token:
        key = request.app[KEY_STORE].find(token)
        if key is None:
            raise Unauthorized("unknown or revoked API key; ask the operator for a valid one")
        return key
    cookie = request.cookies.get(COOKIE, "")
    if not cookie:
        raise Unauthorized(
            "this olla needs an API key: send `Authorization: Bearer <key>` or `x-api-key: "
            "<key>` (the CLI sends OLLA_API_KEY; the web page signs in with one); the operator "
            "makes one with `olla keys add NAME`"
        )
    key = request.app[SESSIONS].find(cookie, keys)
    if key is None:
        raise Unauthorized(
            "your web page session has ended (signed out, a week unused, a daemon restart or "
            "its key revoked); sign in again with your API key"
        )
    if not sends_ui_header(request.method, request.headers):
        raise Forbidden(
            f"{request.method} {request.path} with a session cookie needs the header "
            f"`{UI_HEADER}: 1` (the web page sends it; a cross-site form cannot)"
        )
    return key


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
    if origin is None or origin == f"{request.scheme}://{request.host}".lower():
        # none, or the daemon's own (the web page reached by any name the Host check let
        # through): same-origin, no CORS to grant. A rebinding page is same-origin too, which
        # is why the Host check, not this one, guards against it
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
