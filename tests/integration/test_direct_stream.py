"""Streams the runner writes into the client's socket itself, and the daemon's own where it cannot
(HTTP/1.0), through a real daemon and runner."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import Daemon, until
from tests.daemon_helpers import create_tiny

GREEDY = {"temperature": 0, "num_predict": 24}


async def _stream(
    session: aiohttp.ClientSession, path: str, body: dict[str, Any]
) -> list[dict[str, Any]]:
    async with session.post(path, json=body) as r:
        assert r.status == 200, await r.text()
        return [json.loads(line) async for line in r.content if line.strip()]


def _direct_lines(d: Daemon) -> list[str]:
    lines = d.log().splitlines()
    return [line for line in lines if "olla.access" in line and "direct=true" in line]


def _without_times(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    slow = (
        "created_at",
        "total_duration",
        "load_duration",
        "prompt_eval_duration",
        "eval_duration",
    )
    return [{k: v for k, v in line.items() if k not in slow} for line in lines]


async def test_the_runners_stream_is_line_for_line_the_daemons_own(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    generate = {"model": "tiny", "prompt": "Name three colors.", "options": GREEDY}
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "options": GREEDY}
    answers = {}
    # HTTP/1.0 has no chunked encoding: the daemon writes those lines itself, and the body ends
    # when the connection does, though the client asks for keep-alive (aiohttp's does)
    for version in (aiohttp.HttpVersion11, aiohttp.HttpVersion10):
        async with aiohttp.ClientSession(base_url=daemon.base_url, version=version) as s:
            answers[version] = (
                await asyncio.wait_for(_stream(s, "/api/generate", generate), 120),
                await asyncio.wait_for(_stream(s, "/api/chat", chat), 120),
            )
    direct, relayed = answers[aiohttp.HttpVersion11], answers[aiohttp.HttpVersion10]
    for ours, theirs in zip(direct, relayed, strict=True):
        assert len(ours) > 2 and ours[-1]["done"] and 0 < ours[-1]["eval_count"] <= 24
        assert _without_times(ours) == _without_times(theirs)
    assert len(_direct_lines(daemon)) == 2  # the HTTP/1.1 pair, and only it


async def test_one_connection_carries_direct_streams_one_after_another(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    connector = aiohttp.TCPConnector(limit=1)  # every request on the same kept-alive connection
    async with aiohttp.ClientSession(base_url=daemon.base_url, connector=connector) as s:
        for prompt in ("Count to three.", "Name a fruit.", "Say hi."):
            body = {"model": "tiny", "prompt": prompt, "options": GREEDY}
            lines = await _stream(s, "/api/generate", body)
            last = lines[-1]  # the model may end its answer before num_predict
            assert last["done"] and 0 < last["eval_count"] <= 24
            assert last["done_reason"] == ("length" if last["eval_count"] == 24 else "stop")
            assert all(not line["done"] for line in lines[:-1])
        async with s.get("/api/version") as r:  # and plain answers after them
            assert r.status == 200 and "version" in await r.json()
    assert len(_direct_lines(daemon)) == 3


async def test_a_client_that_leaves_a_direct_stream_frees_its_sequence(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    body = {"model": "tiny", "prompt": "Tell a long story.", "options": {"num_predict": 3000}}
    async with aiohttp.ClientSession(base_url=daemon.base_url) as s:
        async with s.post("/api/generate", json=body) as r:
            for _ in range(3):
                assert json.loads(await r.content.readline())["done"] is False
            assert r.connection is not None
            r.connection.transport.abort()  # type: ignore[union-attr]

        async def running() -> float | None:
            async with s.get("/metrics") as r:
                text = await r.text()
            line = 'olla_sequences{model="tiny:latest",state="running"} '
            if line not in text:  # the runner answers a scrape's question for the next one
                return None
            return float(text.split(line, 1)[1].split()[0])

        seen: list[float | None] = []

        async def idle() -> bool:
            seen.append(await running())
            return seen[-1] == 0

        await until_async(idle, timeout=20, what="the left stream's sequence to be freed")
        await until(lambda: " 499 " in daemon.log(), timeout=10, what="a 499 log line")
        lines = await _stream(s, "/api/generate", {**body, "options": GREEDY})
        assert lines[-1]["done"]  # the model serves on


async def test_an_http_1_0_event_stream_ends_with_the_connection(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
    }

    async def events() -> list[str]:
        async with aiohttp.ClientSession(
            base_url=daemon.base_url, version=aiohttp.HttpVersion10
        ) as s:
            async with s.post("/v1/chat/completions", json=body) as r:
                assert r.status == 200 and r.headers.get("Transfer-Encoding") is None
                return [line.decode().strip() async for line in r.content if line.strip()]

    lines = await asyncio.wait_for(events(), 120)  # keep-alive asked for: ended by the close
    assert lines[-1] == "data: [DONE]" and len(lines) > 3


async def until_async(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """`until` for a condition that must itself await."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
