"""API keys and CORS on a real daemon: keys made and revoked with the CLI, checked per request."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import Daemon, free_port, make_daemon, wait_for


def olla(d: Daemon, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**d.env, **({"OLLA_API_KEY": key} if key else {})}
    return subprocess.run(
        [sys.executable, "-m", "olla", *args], env=env, capture_output=True, text=True, timeout=60
    )


def add_key(d: Daemon, name: str, *flags: str) -> str:
    made = olla(d, "keys", "add", name, *flags)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


@pytest.fixture
async def session(daemon: Daemon) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=daemon.base_url) as s:
        yield s


async def call(
    s: aiohttp.ClientSession, method: str, path: str, key: str | None = None, **kw: Any
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with s.request(method, path, headers=headers, **kw) as r:
        text = await r.text()
        return r.status, json.loads(text) if text.startswith(("{", "[")) else text


async def test_keys_guard_every_route_once_one_exists(
    daemon: Daemon, session: aiohttp.ClientSession
) -> None:
    assert (await call(session, "GET", "/api/tags"))[0] == 200  # no keys: open
    admin = add_key(daemon, "alice")
    reader = add_key(daemon, "ci-bot", "--read-only")
    assert admin.startswith("olla_") and admin != reader

    status, body = await call(session, "GET", "/api/tags")
    assert status == 401 and "Authorization: Bearer" in body["error"]
    status, body = await call(session, "GET", "/api/tags", key="olla_wrong")
    assert status == 401 and "unknown or revoked" in body["error"]
    status, body = await call(session, "GET", "/v1/models")
    assert status == 401 and body["error"]["type"] == "authentication_error"
    for path in ("/", "/api/version"):  # open to all, as a health check
        assert (await call(session, "GET", path))[0] == 200

    assert (await call(session, "GET", "/api/tags", key=admin))[0] == 200
    assert (await call(session, "GET", "/api/tags", key=reader))[0] == 200
    assert (await call(session, "GET", "/v1/models", key=reader))[0] == 200
    status, body = await call(session, "POST", "/api/show", key=reader, json={"model": "nope"})
    assert status == 404  # past the key check: a read-only key may read
    body = {"model": "copy", "from": "nope"}
    status, reply = await call(session, "POST", "/api/create", key=reader, json=body)
    assert status == 403 and "'ci-bot' is read-only" in reply["error"]
    status, reply = await call(session, "POST", "/api/create", key=admin, json=body)
    assert status == 404  # the admin got through to the create itself

    listed = olla(daemon, "keys", "list")
    assert "alice" in listed.stdout and "read-only" in listed.stdout
    assert admin not in listed.stdout
    stored = daemon.env["OLLA_HOME"] + "/keys.json"
    assert admin not in open(stored).read() and reader not in open(stored).read()
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o600

    assert olla(daemon, "list", key=admin).returncode == 0  # the CLI sends OLLA_API_KEY
    refused = olla(daemon, "list")
    assert refused.returncode == 1 and "needs an API key" in refused.stderr
    assert olla(daemon, "keys", "revoke", "alice").returncode == 0
    assert (await call(session, "GET", "/api/tags", key=admin))[0] == 401  # from the next request
    assert olla(daemon, "keys", "revoke", "alice").returncode == 1
    assert "exists" in olla(daemon, "keys", "add", "ci-bot").stderr


async def test_cors_allows_local_origins_and_the_configured_ones(tmp_path: Any) -> None:
    d = make_daemon(tmp_path)
    d.env["OLLA_ORIGINS"] = "https://*.example.com"
    d.start()
    try:
        async with aiohttp.ClientSession(base_url=d.base_url) as s:
            for origin in ("http://localhost:3000", "https://app.example.com"):
                async with s.get("/api/tags", headers={"Origin": origin}) as r:
                    assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == origin
                asked = "authorization,content-type"
                preflight = {
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": asked,
                }
                async with s.options("/api/chat", headers=preflight) as r:
                    assert r.status == 204
                    assert "POST" in r.headers["Access-Control-Allow-Methods"]
                    assert r.headers["Access-Control-Allow-Headers"] == asked
            async with s.get("/api/tags", headers={"Origin": "https://evil.test"}) as r:
                assert r.status == 403 and "OLLA_ORIGINS" in (await r.json())["error"]
            async with s.get("/api/tags") as r:  # not a browser: no CORS at all
                assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
    finally:
        d.stop()


def test_listening_beyond_loopback_without_keys_warns(tmp_path: Any) -> None:
    d = make_daemon(tmp_path, host=f"0.0.0.0:{free_port()}")
    d.host = d.host.replace("0.0.0.0", "127.0.0.1")  # where this test connects
    d.start()
    try:
        wait_for(lambda: "without API keys" in d.log(), timeout=30, what="the warning")
    finally:
        d.stop()
