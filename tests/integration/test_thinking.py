"""Thinking models through a real daemon: SmolLM2 under a TEMPLATE that opens `<think>` for it,
so that its continuation is reasoning until a closing tag; on /api/chat, /api/generate and /v1,
whole and streamed, and through the official clients. One daemon serves the module."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import ollama
import openai
import pytest

from tests.conftest import Daemon, make_daemon
from tests.daemon_helpers import create_tiny

# the reasoning of earlier turns between the tags, and a generation prompt that opens them
THINKER = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ if .Thinking }}<think>{{ .Thinking }}</think>
{{ end }}{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ if .Think }}<think>
{{ end }}"""
GREEDY = {"temperature": 0, "num_predict": 24}
ASK = [{"role": "user", "content": "Why is the sky blue?"}]
TAGS = ("<think>", "</think>")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Daemon]:
    d = make_daemon(tmp_path_factory.mktemp("thinking"))
    d.start()

    async def models() -> None:
        await create_tiny(d, smollm2_gguf)
        body = {"model": "thinker", "from": "tiny", "template": THINKER, "stream": False}
        async with aiohttp.ClientSession(base_url=d.base_url) as s:
            async with s.post("/api/create", json=body) as r:
                assert r.status == 200, await r.text()

    asyncio.run(models())
    yield d
    d.stop()


async def _post(d: Daemon, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession(base_url=d.base_url) as s:
        async with s.post(path, json=body) as r:
            if r.content_type in ("application/x-ndjson", "text/event-stream"):
                lines = [line.decode().strip() async for line in r.content if line.strip()]
                return r.status, lines
            return r.status, await r.json()


def _clean(*texts: str) -> bool:
    return not any(tag in text for text in texts for tag in TAGS)


async def test_a_template_with_think_tags_makes_a_thinking_model(served: Daemon) -> None:
    _, shown = await _post(served, "/api/show", {"model": "thinker"})
    assert shown["capabilities"] == ["completion", "thinking"]
    _, tags = await _post(served, "/api/show", {"model": "tiny"})
    assert "thinking" not in tags["capabilities"]


async def test_chat_thinks_by_default_and_the_reasoning_never_reaches_the_content(
    served: Daemon,
) -> None:
    body = {"model": "thinker", "messages": ASK, "options": GREEDY}
    status, whole = await _post(served, "/api/chat", {**body, "stream": False})
    assert status == 200
    message = whole["message"]
    assert message["thinking"] and _clean(message["thinking"], message["content"])
    _, lines = await _post(served, "/api/chat", body)
    streamed = [json.loads(line) for line in lines]
    thinking = "".join(line["message"].get("thinking", "") for line in streamed)
    content = "".join(line["message"]["content"] for line in streamed)
    assert (thinking, content) == (message["thinking"], message["content"])  # greedy: the same
    assert len([line for line in streamed if line["message"].get("thinking")]) > 1  # as it came


async def test_think_false_is_an_answer_without_reasoning(served: Daemon) -> None:
    body = {"model": "thinker", "messages": ASK, "options": GREEDY, "think": False}
    status, whole = await _post(served, "/api/chat", {**body, "stream": False})
    assert status == 200 and "thinking" not in whole["message"]
    assert whole["message"]["content"]


async def test_generate_gives_thinking_beside_the_response(served: Daemon) -> None:
    body = {"model": "thinker", "prompt": ASK[0]["content"], "options": GREEDY, "stream": False}
    _, answer = await _post(served, "/api/generate", body)
    _, chat = await _post(
        served,
        "/api/chat",
        {"model": "thinker", "messages": ASK, "options": GREEDY, "stream": False},
    )
    assert answer["thinking"] == chat["message"]["thinking"]  # the same prompt, rendered alike
    assert _clean(answer["thinking"], answer["response"])


async def test_levels_and_models_that_cannot_think(served: Daemon) -> None:
    body = {"model": "thinker", "messages": ASK, "options": GREEDY, "stream": False}
    status, _ = await _post(served, "/api/chat", {**body, "think": "high"})
    assert status == 200
    status, refused = await _post(served, "/api/chat", {**body, "think": "deep"})
    assert status == 400 and '"think" must be true, false' in refused["error"]
    status, refused = await _post(served, "/api/chat", {**body, "model": "tiny", "think": True})
    assert status == 400 and "tiny:latest does not support thinking" in refused["error"]
    status, plain = await _post(served, "/api/chat", {**body, "model": "tiny", "think": False})
    assert status == 200 and "thinking" not in plain["message"]


async def test_openai_returns_the_reasoning_in_reasoning_and_reasoning_content(
    served: Daemon,
) -> None:
    _, chat = await _post(
        served,
        "/api/chat",
        {"model": "thinker", "messages": ASK, "options": GREEDY, "stream": False},
    )
    body = {"model": "thinker", "messages": ASK, "temperature": 0, "max_tokens": 24}
    _, whole = await _post(served, "/v1/chat/completions", body)
    message = whole["choices"][0]["message"]
    assert message["reasoning"] == message["reasoning_content"] == chat["message"]["thinking"]
    _, events = await _post(served, "/v1/chat/completions", {**body, "stream": True})
    chunks = [json.loads(e.removeprefix("data: ")) for e in events if e != "data: [DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning", "") for d in deltas) == message["reasoning"]
    assert _clean(*(d.get("content", "") for d in deltas))
    status, _ = await _post(served, "/v1/chat/completions", {**body, "reasoning_effort": "none"})
    assert status == 200


def test_the_official_clients_read_the_reasoning(served: Daemon) -> None:
    client = ollama.Client(host=served.base_url)
    answer = client.chat(model="thinker", messages=ASK, think=True, options=GREEDY)
    assert answer.message.thinking and _clean(answer.message.thinking, answer.message.content)
    oa = openai.OpenAI(base_url=served.base_url + "/v1", api_key="unused")
    done = oa.chat.completions.create(
        model="thinker",
        messages=ASK,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=24,
        reasoning_effort="low",
    )
    extra = done.choices[0].message.model_extra or {}
    assert extra["reasoning_content"] == answer.message.thinking
