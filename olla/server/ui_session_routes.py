"""The web page's sign-in routes: `GET|POST|DELETE /ui/api/session`.

`POST` exchanges an API key for the session cookie (the page forgets the key at once), `GET`
says who is signed in (the page's first call), `DELETE` signs out. With no keys there is
nothing to sign in to: every caller is the local user, an admin.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from olla.errors import Forbidden, InvalidRequest, Unauthorized
from olla.server.auth import KEY_STORE
from olla.server.ui_sessions import COOKIE, IDLE_LIMIT, SESSIONS, UI_HEADER, sends_ui_header

LOCAL = {"user": "local", "admin": True, "keys": False}


def _body(name: str, role: str | None) -> dict[str, Any]:
    return {"user": name, "admin": role == "admin", "keys": True}


def _require_ui_header(request: web.Request) -> None:
    if not sends_ui_header(request.method, request.headers):
        raise Forbidden(
            f"{request.method} {request.path} needs the header `{UI_HEADER}: 1` "
            "(the web page sends it; a cross-site form cannot)"
        )


def _set_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(IDLE_LIMIT),  # the browser keeps it as long as the daemon would
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure or None,  # set Secure only where the page came over TLS
    )


async def session_get(request: web.Request) -> web.StreamResponse:
    """Who the caller is; the auth middleware has already refused (401) one with no session."""
    if not request.app[KEY_STORE].keys():
        return _json(LOCAL)
    response = _json(_body(request["user"], request["role"]))
    token = request.cookies.get(COOKIE)
    if token and not request.headers.get("Authorization"):
        _set_cookie(request, response, token)  # a week more from now, as the daemon counts
    return response


async def session_post(request: web.Request) -> web.StreamResponse:
    """Sign in: body `{"key": "<api key>"}` → the cookie; 401 for a wrong key."""
    _require_ui_header(request)
    body = await request.json()
    key_text = body.get("key") if isinstance(body, dict) else None
    if not isinstance(key_text, str) or not key_text.strip():
        raise InvalidRequest('send {"key": "<api key>"}: the key `olla keys add NAME` printed')
    store = request.app[KEY_STORE]
    if not store.keys():
        return _json(LOCAL)  # no keys: nothing to sign in to
    key = store.find(key_text.strip())
    if key is None:
        raise Unauthorized("unknown or revoked API key; ask the operator for a valid one")
    response = _json(_body(key.name, key.role))
    _set_cookie(request, response, request.app[SESSIONS].create(key))
    return response


async def session_delete(request: web.Request) -> web.StreamResponse:
    """Sign out: the session ends and the cookie is cleared (204 even with no session)."""
    _require_ui_header(request)
    token = request.cookies.get(COOKIE)
    if token:
        request.app[SESSIONS].end(token)
    response = web.Response(status=204)
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
    return response


def _json(body: dict[str, Any]) -> web.Response:
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    """The session routes; the store itself is made by `make_app`."""
    app.router.add_get("/ui/api/session", session_get)
    app.router.add_post("/ui/api/session", session_post)
    app.router.add_delete("/ui/api/session", session_delete)
