"""Loading and unloading through a real daemon: /api/ps, olla ps/stop, keep_alive, eviction."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from tests.conftest import Daemon, make_daemon, until, wait_for
from tests.daemon_helpers import api, chat_lines, create_tiny, olla, runner_processes


async def running(d: Daemon) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in (await api(d, "GET", "/api/ps"))["models"]}


def gone(process: psutil.Process) -> bool:
    return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE


async def test_ps_lists_what_is_loaded_and_stop_unloads_it(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    assert await running(daemon) == {}
    await chat_lines(daemon, "Hi", {"num_predict": 1, "num_ctx": 1024})
    (model,) = (await running(daemon)).values()
    assert model["name"] == "tiny:latest" and model["context_length"] == 1024
    assert model["details"]["format"] == "gguf" and model["size_vram"] == 0
    estimate, actual = model["memory"]["estimate"], model["memory"]["actual"]
    assert model["size"] == actual["total"] > smollm2_gguf.stat().st_size
    assert abs(estimate["total"] - actual["total"]) <= 0.1 * actual["total"]
    verbose = await olla(daemon, "ps", "--verbose")
    assert "estimate / actual: " in verbose.output and "KV CACHE" in verbose.output
    out = await olla(daemon, "ps")
    assert out.exit_code == 0, out.output
    header, row = out.output.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert row.startswith("tiny:latest") and "100% CPU" in row and "from now" in row
    (runner,) = runner_processes(daemon)
    assert runner.environ().get("CUDA_VISIBLE_DEVICES") == ""  # on the CPU: off any GPU
    out = await olla(daemon, "stop", "tiny")
    assert out.exit_code == 0, out.output
    wait_for(lambda: gone(runner), timeout=15, what="the runner to exit after olla stop")
    assert await running(daemon) == {}
    out = await olla(daemon, "stop", "tiny")
    assert out.exit_code == 1 and 'couldn\'t find model "tiny" to stop' in out.output


async def test_keep_alive_zero_unloads_after_the_request(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    body = {
        "model": "tiny",
        "prompt": "Hi",
        "keep_alive": 0,
        "stream": False,
        "options": {"num_predict": 2},
    }
    assert (await api(daemon, "POST", "/api/generate", body))["done"]
    wait_for(lambda: not runner_processes(daemon), timeout=15, what="the runner to exit")
    assert await running(daemon) == {}


async def test_an_empty_prompt_loads_and_with_keep_alive_0_unloads(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    loaded = await api(
        daemon, "POST", "/api/generate", {"model": "tiny", "keep_alive": -1, "stream": False}
    )
    assert loaded["done_reason"] == "load" and loaded["response"] == ""
    assert (await running(daemon))["tiny:latest"]["expires_at"].startswith("9999-")
    body = {"model": "tiny", "messages": [], "keep_alive": 0, "stream": False}
    unloaded = await api(daemon, "POST", "/api/chat", body)
    assert unloaded["done_reason"] == "unload"
    wait_for(lambda: not runner_processes(daemon), timeout=15, what="the runner to exit")


async def test_bad_keep_alive_is_a_400(daemon: Daemon, smollm2_gguf: Path) -> None:
    await create_tiny(daemon, smollm2_gguf)
    async with aiohttp.ClientSession(base_url=daemon.base_url) as s:
        body = {"model": "tiny", "prompt": "Hi", "keep_alive": "soon"}
        async with s.post("/api/generate", json=body) as r:
            assert r.status == 400
            assert "keep_alive" in (await r.json())["error"]


async def test_the_least_recently_used_model_makes_room(tmp_path: Path, smollm2_gguf: Path) -> None:
    d = make_daemon(tmp_path)
    d.env["OLLA_MAX_LOADED_MODELS"] = "2"
    d.start()
    try:
        await create_tiny(d, smollm2_gguf)
        for name in ("small", "large"):  # the same weights under other names and contexts
            await api(d, "POST", "/api/copy", {"source": "tiny", "destination": name})

        async def use(name: str, num_ctx: int) -> None:
            body = {
                "model": name,
                "prompt": "Hi",
                "stream": False,
                "options": {"num_predict": 1, "num_ctx": num_ctx},
            }
            assert (await api(d, "POST", "/api/generate", body))["done"]

        await use("tiny", 512)
        await use("small", 768)
        await use("tiny", 512)  # small is now the least recently used
        await use("large", 1024)
        wait_for(lambda: len(runner_processes(d)) == 2, timeout=15, what="one runner to go")
        assert sorted(await running(d)) == ["large:latest", "tiny:latest"]
    finally:
        d.stop()


async def test_no_runner_outlives_a_killed_daemon(tmp_path: Path, smollm2_gguf: Path) -> None:
    sig = signal.SIGKILL  # SIGTERM: test_daemon_generation.py
    d = make_daemon(tmp_path)
    d.start()
    try:
        await create_tiny(d, smollm2_gguf)
        await chat_lines(d, "Hi", {"num_predict": 1})
        (runner,) = runner_processes(d)
    finally:
        d.stop(sig)
    wait_for(lambda: gone(runner), timeout=15, what=f"the runner to exit after {sig.name}")


async def test_a_ram_budget_evicts_idle_models_lru_first_never_busy_ones_and_queues(
    tmp_path: Path, smollm2_gguf: Path
) -> None:
    # One GGUF under three names and contexts: with 4 parallel sequences each estimate is
    # 282 MiB (tiny, num_ctx 1024), 260 MiB (small, 768) and 372 MiB (large, 2048). A 660 MiB
    # budget holds tiny and small, or tiny and large, never all three.
    ctx = {"tiny": 1024, "small": 768, "large": 2048}
    d = make_daemon(tmp_path)
    d.env.update(
        OLLA_RAM_BUDGET="660MiB",
        OLLA_MAX_LOADED_MODELS="5",
        OLLA_MAX_QUEUE="1",
        OLLA_NUM_PARALLEL="4",
    )
    d.start()
    try:
        await create_tiny(d, smollm2_gguf)
        for name in ("small", "large"):
            await api(d, "POST", "/api/copy", {"source": "tiny", "destination": name})

        async def use(name: str, keep_alive: Any = None) -> None:
            body = {
                "model": name,
                "prompt": "Hi",
                "stream": False,
                "options": {"num_predict": 1, "num_ctx": ctx[name]},
            }
            if keep_alive is not None:
                body["keep_alive"] = keep_alive
            assert (await api(d, "POST", "/api/generate", body))["done"]

        await use("small", keep_alive=0)
        wait_for(lambda: not runner_processes(d), timeout=15, what="keep_alive 0 to unload")
        await use("tiny", keep_alive=-1)
        await use("small")
        models = await running(d)
        assert sorted(models) == ["small:latest", "tiny:latest"]
        assert models["tiny:latest"]["expires_at"].startswith("9999")  # -1: never expires

        async with aiohttp.ClientSession(base_url=d.base_url) as s:

            async def stream(name: str) -> aiohttp.ClientResponse:
                """A long generation, left open: its model stays busy until it is closed.

                The schema's grammar forbids an end before the context is full: left free, the
                model ended the count after 43 tokens on one machine (an AMD EPYC) and not another.
                """
                endless = {"type": "array", "items": {"type": "integer"}, "minItems": 10_000}
                body = {
                    "model": name,
                    "prompt": "1, 2, 3, 4, 5, 6, 7, 8,",
                    "raw": True,
                    "format": endless,
                    "options": {"temperature": 0, "num_ctx": ctx[name]},
                }
                response = await s.post("/api/generate", json=body)
                assert response.status == 200
                assert json.loads(await response.content.readline())["done"] is False
                return response

            busy = [await stream("tiny")]  # tiny is now the least recently used, but busy
            await use("large")
            wait_for(lambda: len(runner_processes(d)) == 2, timeout=15, what="small to go")
            assert sorted(await running(d)) == ["large:latest", "tiny:latest"]
            busy.append(await stream("large"))
            waiting = asyncio.create_task(use("small"))  # no idle model to make room: waits
            await until(
                lambda: "small:latest waits for room" in d.log_path.read_text(),
                timeout=15,
                what="small to wait",
            )
            async with s.post("/api/generate", json={"model": "small", "prompt": "Hi"}) as r:
                assert r.status == 503 and "OLLA_MAX_QUEUE" in (await r.json())["error"]
                assert r.headers["Retry-After"] == "2"
            assert not waiting.done()
            for response in busy:
                response.close()  # the client goes: its request is cancelled, the model idles
            await asyncio.wait_for(waiting, 30)
        assert "small:latest" in await running(d)
    finally:
        d.stop()
