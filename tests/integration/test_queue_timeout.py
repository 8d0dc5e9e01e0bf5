"""The queue timeout on a real daemon: a request that finds no free sequence in time gets 503."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import make_daemon
from tests.daemon_helpers import create_tiny

COUNTING = {"temperature": 0, "repeat_penalty": 1.0}  # "1, 2, 3, 4," counts on and on
LONG = 400  # tokens: seconds on any CPU, more than the waiters' 1 s


async def refused(s: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> str:
    """The error of a request that must get 503 with Retry-After."""
    async with s.post(path, json=body) as r:
        assert r.status == 503, await r.text()
        assert r.headers["Retry-After"] == "2"  # the runner's, as the daemon's: carried over
        error = (await r.json())["error"]
        return str(error["message"] if isinstance(error, dict) else error)


async def test_a_request_with_no_free_sequence_in_time_gets_503_and_the_running_one_goes_on(
    tmp_path: Path, smollm2_gguf: Path
) -> None:
    d = make_daemon(tmp_path)
    d.env.update(OLLA_NUM_PARALLEL="1", OLLA_QUEUE_TIMEOUT="1s")
    d.start()
    try:
        await create_tiny(d, smollm2_gguf)
        base = {"model": "tiny", "prompt": "1, 2, 3, 4,", "raw": True}
        long = {**base, "options": {**COUNTING, "num_predict": LONG}}
        short = {**base, "options": {**COUNTING, "num_predict": 4}}
        async with aiohttp.ClientSession(base_url=d.base_url) as s:
            first = await s.post("/api/generate", json=long)  # holds the only sequence
            assert first.status == 200
            assert json.loads(await first.content.readline())["done"] is False
            # a plain stream (the runner would write it itself), a whole answer and /v1: each
            # waits its 1 s for the sequence, then gets its 503 as a status, not a 200 stream
            errors = await asyncio.gather(
                refused(s, "/api/generate", {**short, "stream": True}),
                refused(s, "/api/generate", {**short, "stream": False}),
                refused(s, "/v1/completions", {"model": "tiny", "prompt": "Hi", "max_tokens": 4}),
            )
            for error in errors:
                assert "tiny:latest" in error and "OLLA_QUEUE_TIMEOUT=1s" in error, error
                assert "OLLA_NUM_PARALLEL" in error
            lines = [json.loads(line) async for line in first.content if line.strip()]
            first.close()
            assert not any("error" in line for line in lines)
            final = lines[-1]
            assert final["done"] and final["done_reason"] == "length"
            assert final["eval_count"] == LONG  # unharmed: every token it asked for
            async with s.post("/api/generate", json={**short, "stream": False}) as r:
                assert r.status == 200, await r.text()  # the sequence is free again
                assert (await r.json())["eval_count"] == 4
    finally:
        d.stop()
