"""Helpers for tests against a real daemon: create the tiny model, chat with it, call the API and
the CLI, find its runner processes. The daemon itself is tests/conftest.py's `daemon` fixture."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from click.testing import CliRunner, Result

from olla.cli import cli
from tests.conftest import Daemon

GREEDY = {"temperature": 0, "num_predict": 24}

PROMPTS = [
    "What is the capital of France?",
    "Name three colors.",
    "Count from one to five.",
    "What is 2 + 2?",
    "Say hello in Spanish.",
    "What do bees make?",
    "Name a planet.",
    "What is the opposite of hot?",
]


def create_model(d: Daemon, name: str, modelfile: Path) -> None:
    """`olla create NAME -f MODELFILE` in a process of its own, as a user runs it; it must work."""
    created = subprocess.run(
        [sys.executable, "-m", "olla", "create", name, "-f", str(modelfile)],
        env=d.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr


async def create_tiny(d: Daemon, gguf: Path) -> None:
    """Model `tiny` from the GGUF, uploaded as a blob as a client would (no parameters)."""
    data = gguf.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with aiohttp.ClientSession(base_url=d.base_url) as s:
        async with s.post(f"/api/blobs/{digest}", data=data) as r:
            assert r.status == 201
        body = {"model": "tiny", "files": {gguf.name: digest}, "stream": False}
        async with s.post("/api/create", json=body) as r:
            assert r.status == 200, await r.text()


async def chat_lines(d: Daemon, content: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    """The NDJSON lines of one streamed /api/chat turn to `tiny`."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "options": options}
    async with aiohttp.ClientSession(base_url=d.base_url) as s:
        async with s.post("/api/chat", json=body) as r:
            assert r.status == 200, await r.text()
            return [json.loads(line) async for line in r.content if line.strip()]


def chat_answer(d: Daemon, model: str, content: str, options: dict[str, Any] | None = None) -> str:
    """The whole answer of one /api/chat turn, not streamed, for tests that are not async."""
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": False}
    request = urllib.request.Request(
        d.base_url + "/api/chat", json.dumps({**body, "options": options or {}}).encode()
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return str(json.load(response)["message"]["content"])


def text_of(lines: list[dict[str, Any]]) -> str:
    """The assistant's whole answer in a chat stream's lines."""
    return "".join(line.get("message", {}).get("content", "") for line in lines)


def runner_processes(d: Daemon) -> list[psutil.Process]:
    """The daemon's live runner processes (one per loaded model)."""
    assert d.process is not None
    found = []
    for child in psutil.Process(d.process.pid).children():
        try:
            if "olla.runner" in " ".join(child.cmdline()):
                found.append(child)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            pass  # a runner that has exited and is being reaped
    return found


async def api(d: Daemon, method: str, path: str, body: Any = None) -> Any:
    """One API call that must answer 200; its JSON, or None for another content type."""
    async with aiohttp.ClientSession(base_url=d.base_url) as s:
        async with s.request(method, path, json=body) as r:
            assert r.status == 200, await r.text()
            return await r.json() if r.content_type == "application/json" else None


async def olla(d: Daemon, *args: str) -> Result:
    """The CLI against the daemon, off the event loop (the CLI runs its own)."""
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=d.env)
