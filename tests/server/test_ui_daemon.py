"""The web page on a real daemon: served with its CSP, turned off by --no-ui, and signed in to
with a key exchanged for a session cookie that stands for the key (same roles) under the
cross-site request rule."""

from __future__ import annotations

import hashlib
import json
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from olla.server.ui_page import CSP
from tests.conftest import Daemon, make_daemon
from tests.server.test_auth import add_key, olla

UI = {"X-Olla-UI": "1"}


async def request(
    d: Daemon, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any
) -> tuple[int, Any, Any]:
    """One call with no cookie jar (each test sends its cookie by hand): status, body, headers."""
    url = URL(d.base_url + path, encoded=True)  # as written: `..` and `%2e` reach the daemon
    async with aiohttp.ClientSession() as s:
        async with s.request(method, url, headers=headers or {}, allow_redirects=False, **kw) as r:
            text = await r.text()
            body = json.loads(text) if text.startswith(("{", "[")) else text
            return r.status, body, r.headers


def cookie_of(headers: Any) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    jar.load(headers["Set-Cookie"])
    return jar


async def sign_in(d: Daemon, key: str) -> dict[str, str]:
    """The headers a signed-in page sends: its session cookie and the UI header."""
    status, body, headers = await request(d, "POST", "/ui/api/session", UI, json={"key": key})
    assert status == 200, body
    return {"Cookie": f"olla_session={cookie_of(headers)['olla_session'].value}", **UI}


async def test_the_page_and_its_files_are_served_with_the_csp(daemon: Daemon) -> None:
    status, page, headers = await request(daemon, "GET", "/ui/")
    assert status == 200 and "<html" in page.lower()
    assert headers["Content-Type"].startswith("text/html")
    for name in ("app.js", "style.css"):
        assert f"static/{name}" in page
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    status, _, headers = await request(daemon, "GET", "/ui/static/app.js")
    assert status == 200 and headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["Content-Security-Policy"] == CSP
    status, _, headers = await request(daemon, "GET", "/ui/static/style.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    status, _, headers = await request(daemon, "GET", "/ui")
    assert status == 302 and headers["Location"] == "/ui/"
    for path in (
        "/ui/static/",
        "/ui/static/vendor",
        "/ui/static/%2e%2e/index.html",
        "/ui/static/..%2findex.html",
        "/ui/static/nope.js",
        "/ui/index.html",
    ):
        status, body, _ = await request(daemon, "GET", path)
        assert status == 404 and "error" in body, path
    assert (await request(daemon, "GET", "/"))[:2] == (200, "olla is running")  # as before
    status, body, _ = await request(daemon, "GET", "/ui/api/session")  # no keys: local admin
    assert (status, body) == (200, {"user": "local", "admin": True, "keys": False})
    assert f"web page at {daemon.base_url}/ui/" in daemon.log()


async def test_no_ui_turns_the_page_off(tmp_path: Path) -> None:
    d = make_daemon(tmp_path)
    d.command = (*d.command, "--no-ui")
    d.start()
    try:
        for path in ("/ui/", "/ui/static/app.js", "/ui/api/session"):
            assert (await request(d, "GET", path))[0] == 404, path
        assert (await request(d, "GET", "/"))[0] == 200
        assert "web page at" not in d.log()
    finally:
        d.stop()


async def test_a_foreign_host_is_refused_on_the_page_too(daemon: Daemon) -> None:
    for method, path in (
        ("GET", "/ui/"),
        ("GET", "/ui/static/app.js"),
        ("POST", "/ui/api/session"),
    ):
        status, body, _ = await request(
            daemon, method, path, {"Host": "rebind.attacker.test", **UI}, json={"key": "x"}
        )
        assert status == 403 and "OLLA_ALLOWED_HOSTS" in body["error"], path
    assert (
        await request(
            daemon, "GET", "/ui/", {"Host": daemon.host.replace("127.0.0.1", "localhost")}
        )
    )[0] == 200


async def test_sign_in_with_a_key_and_the_session_stands_for_it(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    admin, reader = add_key(daemon, "alice"), add_key(daemon, "bob", "--read-only")
    assert (await request(daemon, "GET", "/ui/"))[0] == 200  # the page is open: it signs in
    status, body, _ = await request(daemon, "GET", "/ui/api/session")
    assert status == 401 and "API key" in body["error"]

    status, body, _ = await request(daemon, "POST", "/ui/api/session", UI, json={"key": "olla_x"})
    assert status == 401 and "unknown or revoked" in body["error"]
    status, body, _ = await request(daemon, "POST", "/ui/api/session", UI, json={})
    assert status == 400 and '"key"' in body["error"]
    status, body, _ = await request(daemon, "POST", "/ui/api/session", json={"key": admin})
    assert status == 403 and "X-Olla-UI" in body["error"]  # a cross-site form cannot sign in

    status, body, headers = await request(
        daemon, "POST", "/ui/api/session", UI, json={"key": admin}
    )
    assert (status, body) == (200, {"user": "alice", "admin": True, "keys": True})
    morsel = cookie_of(headers)["olla_session"]
    assert len(morsel.value) >= 43 and admin not in headers["Set-Cookie"]
    assert morsel["httponly"] is True and morsel["samesite"] == "Strict"
    assert morsel["path"] == "/" and not morsel["secure"]  # plain http here: no Secure
    alice = {"Cookie": f"olla_session={morsel.value}"}
    bob = await sign_in(daemon, reader)

    status, body, _ = await request(daemon, "GET", "/ui/api/session", alice)
    assert (status, body) == (200, {"user": "alice", "admin": True, "keys": True})
    status, body, _ = await request(daemon, "GET", "/ui/api/session", bob)
    assert (status, body) == (200, {"user": "bob", "admin": False, "keys": True})
    assert (await request(daemon, "GET", "/api/tags", alice))[:2] == (200, {"models": []})
    assert (await request(daemon, "GET", "/api/tags", bob))[0] == 200

    # a state change by cookie needs the header: here a blob upload, an admin's action
    blob = smollm2_gguf.read_bytes()
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    path = f"/api/blobs/{digest}"
    status, body, _ = await request(daemon, "POST", path, alice, data=b"x")
    assert status == 403 and "X-Olla-UI: 1" in body["error"]
    assert (await request(daemon, "POST", path, {**alice, **UI}, data=blob))[0] == 201
    create = {"model": "tiny", "files": {"tiny.gguf": digest}, "stream": False}
    status, _, _ = await request(daemon, "POST", "/api/create", {**alice, **UI}, json=create)
    assert status == 200
    copy = {"source": "tiny", "destination": "tiny-copy"}
    assert (await request(daemon, "POST", "/api/copy", alice, json=copy))[0] == 403
    assert (await request(daemon, "POST", "/api/copy", {**alice, **UI}, json=copy))[0] == 200

    # the session has its key's role: bob's may read and chat, not delete
    gone = {"model": "tiny-copy"}
    status, body, _ = await request(daemon, "DELETE", "/api/delete", bob, json=gone)
    assert status == 403 and "'bob' is read-only" in body["error"]
    status, _, _ = await request(daemon, "DELETE", "/api/delete", {**alice, **UI}, json=gone)
    assert status == 200
    models = (await request(daemon, "GET", "/api/tags", alice))[1]["models"]
    assert [m["name"] for m in models] == ["tiny:latest"]

    # signing out ends the session and clears the cookie; revoking a key ends its sessions
    status, _, headers = await request(daemon, "DELETE", "/ui/api/session", {**alice, **UI})
    assert status == 204 and cookie_of(headers)["olla_session"].value == ""
    assert cookie_of(headers)["olla_session"]["max-age"] == "0"
    status, body, _ = await request(daemon, "GET", "/api/tags", alice)
    assert status == 401 and "sign in again" in body["error"]
    assert (await request(daemon, "GET", "/api/tags", bob))[0] == 200
    assert olla(daemon, "keys", "revoke", "bob").returncode == 0
    assert (await request(daemon, "GET", "/ui/api/session", bob))[0] == 401
    bearer = {"Authorization": f"Bearer {admin}"}
    assert (await request(daemon, "GET", "/api/tags", bearer))[0] == 200  # keys work as before


@pytest.mark.parametrize("body", ["not json", "[1]", '{"key": 5}'])
async def test_a_malformed_sign_in_is_a_400(daemon: Daemon, body: str) -> None:
    add_key(daemon, "alice")
    headers = {**UI, "Content-Type": "application/json"}
    status, reply, _ = await request(daemon, "POST", "/ui/api/session", headers, data=body)
    assert status == 400 and "error" in reply


async def test_the_page_reached_by_an_allowed_name_may_call_its_own_origin(tmp_path: Path) -> None:
    """A browser sends `Origin` on a same-origin POST: the page opened at a name the operator
    allowed is not a foreign origin (it was a 403 before the CORS check knew its own origin)."""
    d = make_daemon(tmp_path)
    d.env["OLLA_ALLOWED_HOSTS"] = "olla.test"
    d.start()
    try:
        key = add_key(d, "alice")
        own = d.host.replace("127.0.0.1", "olla.test")
        headers = {**UI, "Host": own, "Origin": f"http://{own}"}
        status, body, _ = await request(d, "POST", "/ui/api/session", headers, json={"key": key})
        assert (status, body) == (200, {"user": "alice", "admin": True, "keys": True})
        other = {**headers, "Origin": "http://olla.test:1"}  # another port: another origin
        status, body, _ = await request(d, "POST", "/ui/api/session", other, json={"key": key})
        assert status == 403 and "OLLA_ORIGINS" in body["error"]
    finally:
        d.stop()
