"""GET /metrics on a real daemon: Prometheus text that parses and moves with traffic, and one log
line per request; a scrape never waits on a runner."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Daemon, until
from tests.daemon_helpers import chat_lines, create_tiny, runner_processes

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
BLOCKS_USED = ("olla_kv_blocks", (("model", "tiny:latest"), ("state", "used")))
STATS_AGE = ("olla_runner_stats_age_seconds", (("model", "tiny:latest"),))


async def scrape(s: aiohttp.ClientSession) -> Samples:
    async with s.get("/metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}


async def scrape_until(
    s: aiohttp.ClientSession, holds: Callable[[Samples], bool], what: str, timeout: float = 30
) -> Samples:
    """Scrape until `holds`: a runner's figures come from a question an earlier scrape asked."""
    deadline = time.monotonic() + timeout
    while not holds(samples := await scrape(s)):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
    return samples


async def test_metrics_move_with_traffic_and_each_request_is_logged(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    body = {
        "model": "tiny",
        "prompt": "Count to five.",
        "stream": False,
        "options": {"temperature": 0, "num_predict": 6},
    }
    async with aiohttp.ClientSession(base_url=daemon.base_url) as s:
        before = await scrape(s)
        counts = []
        for _ in range(2):
            async with s.post("/api/generate", json=body) as r:
                counts.append((await r.json())["eval_count"])
        after = await scrape_until(s, lambda m: BLOCKS_USED in m, "the runner's KV figures")

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("olla_requests_total", route="/api/generate", status="200") == 2
    assert delta("olla_tokens_total", model="tiny:latest", kind="completion") == sum(counts)
    assert delta("olla_tokens_total", model="tiny:latest", kind="prompt") > 0
    assert delta("olla_time_to_first_token_seconds_count", model="tiny:latest") == 2
    assert delta("olla_inter_token_seconds_count", model="tiny:latest") == sum(counts) - 2
    assert after[("olla_loaded_models", ())] == 1
    blocks = {
        s: after[("olla_kv_blocks", (("model", "tiny:latest"), ("state", s)))]
        for s in ("used", "free", "cached")
    }
    assert blocks["free"] > 0 and blocks["used"] + blocks["cached"] > 0  # the prompts' blocks
    assert ("olla_sequences", (("model", "tiny:latest"), ("state", "running"))) in after
    assert after[("olla_model_memory_bytes", (("device", "ram"), ("model", "tiny:latest")))] > 0
    assert delta("olla_user_requests_total", user="127.0.0.1") >= 3
    lines = [line for line in daemon.log().splitlines() if "POST /api/generate -> 200" in line]
    assert len(lines) == 2 and "tokens_out=6" in lines[-1] and "ttft_ms=" in lines[-1]


async def test_a_client_that_leaves_mid_stream_is_counted_as_499_not_as_a_fault(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    body = {
        "model": "tiny",
        "prompt": "Count to a thousand.",
        "options": {"temperature": 0, "num_predict": 400},
    }
    async with aiohttp.ClientSession(base_url=daemon.base_url) as s:
        response = await s.post("/api/generate", json=body)
        assert json.loads(await response.content.readline())["done"] is False
        response.close()  # gone before the answer ends
        await until(
            lambda: "POST /api/generate -> 499" in daemon.log(),
            timeout=30,
            what="the access line of the abandoned request",
        )
        after = await scrape(s)
    assert after[("olla_requests_total", (("route", "/api/generate"), ("status", "499")))] == 1
    assert ("olla_requests_total", (("route", "/api/generate"), ("status", "500"))) not in after


async def test_a_scrape_does_not_wait_on_a_stopped_runner(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    await chat_lines(daemon, "Hi", {"num_predict": 1})  # loaded
    (runner,) = runner_processes(daemon)
    async with aiohttp.ClientSession(base_url=daemon.base_url) as s:
        await scrape_until(s, lambda m: BLOCKS_USED in m, "the runner's KV figures")
        runner.send_signal(signal.SIGSTOP)
        try:
            for _ in range(3):  # the first asks the stopped runner; the others find it asked
                started = time.monotonic()
                stopped = await scrape(s)
                assert time.monotonic() - started < 2  # it waited 5 s per scrape before
                assert stopped[("olla_loaded_models", ())] == 1
                assert BLOCKS_USED in stopped  # what the runner said last
            await scrape_until(s, lambda m: m[STATS_AGE] > 1, "the silent runner's figures to age")
        finally:
            runner.send_signal(signal.SIGCONT)
        await scrape_until(s, lambda m: m[STATS_AGE] < 1, "figures from the resumed runner")
    assert daemon.ready()
