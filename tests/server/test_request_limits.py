"""Request limits: per-user counting, and on a real daemon 429, the num_predict ceiling and
the generation timeout."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from olla.errors import TooManyRequests
from olla.server.user_limits import UserLimits
from tests.conftest import make_daemon, until
from tests.daemon_helpers import create_tiny


async def test_a_user_past_its_running_limit_waits_then_past_its_queue_is_refused() -> None:
    limits = UserLimits(max_running=1, max_waiting=1)
    first_done, order = asyncio.Event(), []

    async def request(name: str, user: str = "ann", hold: asyncio.Event | None = None) -> None:
        async with limits.hold(user):
            order.append(name)
            if hold is not None:
                await hold.wait()

    first = asyncio.create_task(request("first", hold=first_done))
    await until(lambda: order == ["first"], timeout=5, what="the first to run")
    second = asyncio.create_task(request("second"))
    await until(lambda: limits.snapshot()["ann"] == (1, 1), timeout=5, what="the second to wait")
    with pytest.raises(TooManyRequests) as refused:
        await request("third")
    assert refused.value.status == 429 and "OLLA_MAX_USER_QUEUE=1" in refused.value.message
    await request("bob's", user="bob")  # another user is not held up
    assert order == ["first", "bob's"]
    first_done.set()
    await asyncio.gather(first, second)
    assert order == ["first", "bob's", "second"]
    assert limits.snapshot() == {}  # nothing kept for users with nothing in flight


async def test_a_waiter_that_gives_up_leaves_its_place() -> None:
    limits = UserLimits(max_running=1, max_waiting=1)
    release = asyncio.Event()

    async def hold() -> None:
        async with limits.hold("ann"):
            await release.wait()

    running = asyncio.create_task(hold())
    await until(lambda: "ann" in limits.snapshot(), timeout=5, what="the first to run")
    waiter = asyncio.create_task(hold())
    await until(lambda: limits.snapshot()["ann"] == (1, 1), timeout=5, what="a waiter")
    waiter.cancel()  # the client went away while waiting
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limits.snapshot()["ann"] == (1, 0)
    release.set()
    await running
    assert limits.snapshot() == {}


async def test_no_running_limit_means_no_counting() -> None:
    limits = UserLimits(max_running=0, max_waiting=0)
    async with limits.hold("ann"), limits.hold("ann"):
        assert limits.snapshot() == {}


async def test_the_daemon_refuses_a_users_extra_request_with_429_and_caps_num_predict(
    tmp_path: Path, smollm2_gguf: Path
) -> None:
    d = make_daemon(tmp_path)
    d.env.update(OLLA_MAX_USER_REQUESTS="1", OLLA_MAX_USER_QUEUE="0", OLLA_MAX_PREDICT="60")
    d.start()
    try:
        await create_tiny(d, smollm2_gguf)
        async with aiohttp.ClientSession(base_url=d.base_url) as s:
            options = {"temperature": 0, "repeat_penalty": 1.0}  # it counts on and on
            body = {
                "model": "tiny",
                "prompt": "1, 2, 3, 4,",
                "raw": True,
                "options": {**options, "num_predict": 1000},
            }
            # streamed, read to its first line: 59 tokens to go when the next requests come
            first = await s.post("/api/generate", json=body)
            assert first.status == 200
            assert json.loads(await first.content.readline())["done"] is False
            async with s.post("/api/generate", json=body) as r:
                assert r.status == 429, await r.text()
                assert r.headers["Retry-After"] == "1"
                assert "OLLA_MAX_USER_REQUESTS=1" in (await r.json())["error"]
            async with s.post("/v1/completions", json={"model": "tiny", "prompt": "Hi"}) as r:
                assert r.status == 429
                assert (await r.json())["error"]["type"] == "rate_limit_error"
            async with s.post("/api/embed", json={"model": "tiny", "input": "Hi"}) as r:
                assert r.status == 429  # embeddings pass the same gate (before: 200)
            lines = [json.loads(line) async for line in first.content if line.strip()]
            first.close()
            final = lines[-1]
            assert final["done"] and final["done_reason"] == "length"
            assert final["eval_count"] == 60  # asked 1000, capped by OLLA_MAX_PREDICT
            # the first is over: the same user is served again
            unbounded = {**body, "stream": False, "options": {**options, "num_predict": -1}}
            async with s.post("/api/generate", json=unbounded) as r:
                assert r.status == 200 and (await r.json())["eval_count"] == 60
    finally:
        d.stop()


async def test_a_generation_over_the_time_limit_is_stopped_with_504(
    tmp_path: Path, smollm2_gguf: Path
) -> None:
    d = make_daemon(tmp_path)
    d.env.update(OLLA_REQUEST_TIMEOUT="1s")
    d.start()
    try:
        await create_tiny(d, smollm2_gguf)
        options = {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 3000}
        body = {"model": "tiny", "prompt": "1, 2, 3, 4,", "raw": True, "options": options}
        async with aiohttp.ClientSession(base_url=d.base_url) as s:
            async with s.post("/api/generate", json={**body, "stream": False}) as r:
                assert r.status == 504, await r.text()
                assert "OLLA_REQUEST_TIMEOUT" in (await r.json())["error"]
            async with s.post("/api/generate", json=body) as r:
                assert r.status == 200
                lines = [json.loads(line) async for line in r.content if line.strip()]
            assert lines[0]["done"] is False and "OLLA_REQUEST_TIMEOUT" in lines[-1]["error"]

            async def running() -> float | None:
                async with s.get("/metrics") as r:
                    text = await r.text()
                line = 'olla_sequences{model="tiny:latest",state="running"} '
                if line not in text:  # the runner answers a scrape's question for the next one
                    return None
                return float(text.split(line, 1)[1].split()[0])

            # the stopped sequences left the engine (cancelled, not run to num_predict)
            deadline = asyncio.get_running_loop().time() + 10
            while await running() != 0 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            assert await running() == 0
            body["options"] = {**options, "num_predict": 3}
            async with s.post("/api/generate", json={**body, "stream": False}) as r:
                assert r.status == 200 and (await r.json())["eval_count"] == 3
    finally:
        d.stop()
