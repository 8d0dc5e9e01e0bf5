#!/usr/bin/env python3
"""Images on a real GPU: olla and llama-server (`--mmproj`) on the same model and projector.

For each server, started one at a time on a free loopback port: the time to first token of one
image request alone (a first image, the same image again, another image), then the same with 8
text streams running, and those streams' largest gap between two tokens while the image went
in. olla also reports its memory estimate against what its runner took on the GPU (nvidia-smi).
Greedy, `/v1/chat/completions`, the image a 512x512 PNG as a data URI. Run by gpu_vision.sh:

    python3 scripts/device/vision_probe.py --model M.gguf --mmproj P.gguf --llama-server BIN
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from olla.testing import Daemon, daemon_env, free_port  # noqa: E402

STREAMS = 8  # text streams beside the image (--streams)
TEXT_TOKENS = 2000  # each stream's length (--text-tokens): still streaming when the image goes in
TEXT = "Write a long story about a lighthouse keeper and the sea."


def picture(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def image_body(model: str, uri: str) -> dict[str, Any]:
    content = [
        {"type": "image_url", "image_url": {"url": uri}},
        {"type": "text", "text": "What is in this picture?"},
    ]
    return chat_body(model, content, 8)


def chat_body(model: str, content: Any, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }


async def stream(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> list[float]:
    """The arrival time (perf_counter) of each streamed chunk with text."""
    times: list[float] = []
    async with session.post(url, json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"{r.status}: {await r.text()}")
        async for raw in r.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"]
            if delta and delta[0].get("delta", {}).get("content"):
                times.append(time.perf_counter())
    return times


async def probe(base: str, model: str) -> dict[str, Any]:
    url = base + "/v1/chat/completions"
    out: dict[str, Any] = {}
    # a new connection per request: llama-server closes idle ones, which a reused one finds late
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:
        await stream(s, url, chat_body(model, "Hello", 4))  # loaded and warm
        for name, seed in (("first image", 1), ("same image", 1), ("other image", 2)):
            sent = time.perf_counter()
            first = (await stream(s, url, image_body(model, picture(seed))))[0]
            out[f"ttft {name}, alone (ms)"] = 1e3 * (first - sent)
        for round_, seed in enumerate((3, 3, 4)):
            texts = [
                asyncio.create_task(stream(s, url, chat_body(model, TEXT, TEXT_TOKENS)))
                for _ in range(STREAMS)
            ]
            await asyncio.sleep(1.0)  # all streaming (their prompts are short)
            sent = time.perf_counter()
            first = (await stream(s, url, image_body(model, picture(seed))))[0]
            before: list[float] = []
            during: list[float] = []  # gaps that end while the image goes in
            for task in texts:
                times = await task
                for a, b in zip(times, times[1:], strict=False):
                    (during if sent <= b <= first else before if b < sent else []).append(b - a)
            label = ("first", "same", "other")[round_]
            out[f"ttft {label} image, beside {STREAMS} streams (ms)"] = 1e3 * (first - sent)
            out[f"streams' gap p50 before / max during, {label} image (ms)"] = (
                round(1e3 * statistics.median(before or [0]), 1),
                round(1e3 * max(during or [0]), 1),
            )
    return out


def gpu_used_mib() -> int:
    """The GPU's memory in use (0 without a GPU)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    text = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(text.split()[0])


def run_olla(model: Path, mmproj: Path, work: Path) -> dict[str, Any]:
    host = f"127.0.0.1:{free_port()}"
    env = daemon_env(work, host, OLLA_NUM_PARALLEL=str(STREAMS + 1), OLLA_CONTEXT_LENGTH="4096")
    daemon = Daemon(host, env, work / "olla.log", own_group=True)
    idle = gpu_used_mib()
    daemon.start(60)
    try:
        (work / "Modelfile").write_text(f"FROM {model}\nFROM {mmproj}\n")
        subprocess.run(
            [sys.executable, "-m", "olla", "create", "vision", "-f", str(work / "Modelfile")],
            env=env,
            check=True,
            timeout=600,
        )
        result = asyncio.run(probe(daemon.base_url, "vision"))
        with urllib.request.urlopen(daemon.base_url + "/api/ps") as answer:
            result["olla /api/ps"] = json.load(answer)["models"][0]
        result["GPU memory the runner took, nvidia-smi (MiB)"] = gpu_used_mib() - idle
        return result
    finally:
        daemon.shutdown()
        print(daemon.log()[-3000:], file=sys.stderr)


def run_llama_server(binary: str, model: Path, mmproj: Path, work: Path) -> dict[str, Any]:
    port = free_port()
    command = [
        binary,
        "-m",
        str(model),
        "--mmproj",
        str(mmproj),
        "-ngl",
        "999",
        "-np",
        str(STREAMS + 1),
        "-c",
        str(4096 * (STREAMS + 1)),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-t",
        "16",
        "--repeat-penalty",
        "1.0",
    ]
    daemon = Daemon(
        f"127.0.0.1:{port}",
        dict(os.environ),
        work / "llama-server.log",
        command,
        "/health",
        True,
        "llama-server",
    )
    daemon.start(300)
    try:
        return asyncio.run(probe(daemon.base_url, "any"))
    finally:
        daemon.shutdown()
        print(daemon.log()[-3000:], file=sys.stderr)


def main() -> int:
    global STREAMS, TEXT_TOKENS
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--mmproj", type=Path, required=True)
    p.add_argument("--llama-server", required=True)
    p.add_argument("--streams", type=int, default=STREAMS)
    p.add_argument("--text-tokens", type=int, default=TEXT_TOKENS)
    args = p.parse_args()
    STREAMS, TEXT_TOKENS = args.streams, args.text_tokens
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "olla").mkdir()
        (work / "ls").mkdir()
        runs = {
            "olla": lambda: run_olla(args.model, args.mmproj, work / "olla"),
            "llama-server": lambda: run_llama_server(
                args.llama_server, args.model, args.mmproj, work / "ls"
            ),
        }
        for name, run in runs.items():
            try:
                result = run()
            except Exception as exc:  # report and go on to the other server
                result = {"error": repr(exc)}
            print(json.dumps({name: result}, indent=1, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
