"""Generation through a real daemon and its real runner process on the SmolLM2 GGUF."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
import psutil

from tests.conftest import Daemon, wait_for
from tests.daemon_helpers import GREEDY, PROMPTS, chat_lines, create_tiny, runner_processes, text_of


async def test_eight_concurrent_streams_are_served_by_one_runner(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    together = await asyncio.gather(*(chat_lines(daemon, p, GREEDY) for p in PROMPTS))
    for lines in together:
        final = lines[-1]
        assert final["done"] and final["done_reason"] in ("stop", "length")
        assert 0 < final["eval_count"] <= GREEDY["num_predict"]
        assert final["prompt_eval_count"] > 20  # the chat template's system prompt is in there
        assert text_of(lines).strip()
    assert len(runner_processes(daemon)) == 1  # one runner served them all


async def test_concurrent_streams_match_single_runs(daemon: Daemon, smollm2_gguf: Path) -> None:
    await create_tiny(daemon, smollm2_gguf)
    # With a KV stream per slot, a row's attention sees its own stream only and the matmuls are
    # row by row, so batch mates do not change its tokens (a unified cache did, now and then).
    alone = text_of(await chat_lines(daemon, PROMPTS[0], GREEDY))
    together = await asyncio.gather(*(chat_lines(daemon, p, GREEDY) for p in PROMPTS))
    assert text_of(together[0]) == alone


async def test_a_killed_runner_fails_its_requests_and_the_next_one_restarts_it(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    await chat_lines(daemon, "Hi", {"num_predict": 1})  # loaded
    (runner,) = runner_processes(daemon)
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "options": {"num_predict": 2000},
    }
    async with aiohttp.ClientSession(base_url=daemon.base_url) as s:
        async with s.post("/api/chat", json=body) as r:
            assert r.status == 200
            first = await r.content.readline()
            assert json.loads(first)["done"] is False
            runner.send_signal(signal.SIGKILL)
            rest = [json.loads(line) async for line in r.content if line.strip()]
    assert rest[-1] == {"error": "model runner for tiny:latest exited: signal 9"}
    assert daemon.ready()  # the daemon carries on
    lines = await chat_lines(daemon, "Hi", {"num_predict": 4})
    assert lines[-1]["done"]
    (fresh,) = runner_processes(daemon)
    assert fresh.pid != runner.pid


async def test_runners_stop_with_the_daemon(daemon: Daemon, smollm2_gguf: Path) -> None:
    await create_tiny(daemon, smollm2_gguf)
    await chat_lines(daemon, "Hi", {"num_predict": 1})
    (runner,) = runner_processes(daemon)
    assert daemon.stop() == 0
    wait_for(
        lambda: not runner.is_running() or runner.status() == psutil.STATUS_ZOMBIE,
        timeout=15,
        what="the runner to exit with the daemon",
    )
