"""Structured outputs through a real daemon: `format` is a grammar, so the answer always parses
and validates against the schema. Greedy, so that each answer is the same on every run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from tests.conftest import Daemon
from tests.daemon_helpers import create_tiny, runner_processes

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "languages": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
        "retired": {"type": "boolean"},
    },
    "required": ["name", "age", "languages", "retired"],
    "additionalProperties": False,
}


@pytest.fixture
async def session(daemon: Daemon, smollm2_gguf: Path) -> AsyncIterator[aiohttp.ClientSession]:
    await create_tiny(daemon, smollm2_gguf)
    async with aiohttp.ClientSession(base_url=daemon.base_url) as s:
        yield s


async def post(s: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with s.post(path, json=body) as r:
        return r.status, await r.json(content_type=None)


async def test_a_json_schema_answer_always_validates(session: aiohttp.ClientSession) -> None:
    async def ask(who: str) -> dict[str, Any]:
        body = {
            "model": "tiny",
            "stream": False,
            "format": PERSON,
            "messages": [{"role": "user", "content": f"Describe {who}."}],
            "options": {"temperature": 0, "num_predict": 400},
        }
        status, reply = await post(session, "/api/chat", body)
        assert status == 200, reply
        assert reply["done_reason"] == "stop", reply
        return reply

    people = ("a French engineer", "a retired teacher", "a young painter", "a ship's captain")
    replies = await asyncio.gather(*(ask(who) for who in people))  # batched together
    for reply in replies:
        jsonschema.validate(json.loads(reply["message"]["content"]), PERSON)


async def test_format_json_streams_one_json_value(session: aiohttp.ClientSession) -> None:
    body = {
        "model": "tiny",
        "prompt": "List two fruits as JSON.",
        "format": "json",
        # SmolLM2 closes its JSON within 300 tokens under a repeat penalty (greedy without one
        # it pads the value with whitespace); the grammar keeps it JSON either way
        "options": {"temperature": 0, "num_predict": 300, "repeat_penalty": 1.1},
    }
    async with session.post("/api/generate", json=body) as r:
        assert r.status == 200
        lines = [json.loads(line) async for line in r.content if line.strip()]
    assert len(lines) > 2 and lines[-1]["done"] and lines[-1]["done_reason"] == "stop"
    json.loads("".join(line["response"] for line in lines))


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("yaml", 'field "format" must be "json" or a JSON schema'),
        (7, 'field "format"'),
        ({"type": "object", "properties": {"a": {"$ref": "#/nope"}}}, "cannot follow this JSON"),
    ],
)
async def test_a_format_olla_cannot_follow_is_a_400(
    session: aiohttp.ClientSession, fmt: Any, message: str
) -> None:
    body = {"model": "tiny", "prompt": "Hi", "format": fmt, "stream": False}
    status, reply = await post(session, "/api/generate", body)
    assert status == 400 and message in reply["error"], reply


# 1,000,000 (and 50,000) crashed the runner with signal 11 (llama.cpp's grammar parser recursed
# once per nested optional item until its stack ran out), ending every stream on the model.
HUGE_ARRAY = {"type": "array", "items": {"type": "string"}, "maxItems": 1_000_000}


async def test_a_schema_over_the_limits_is_a_400_and_the_runner_carries_on(
    daemon: Daemon, session: aiohttp.ClientSession
) -> None:
    greedy = {"temperature": 0, "num_predict": 200}
    ask = {"model": "tiny", "prompt": "Describe a French engineer.", "format": PERSON}
    status, before = await post(
        session, "/api/generate", {**ask, "stream": False, "options": greedy}
    )
    assert status == 200, before
    (runner,) = runner_processes(daemon)
    long = {"model": "tiny", "prompt": "Tell a long story.", "options": greedy}
    async with session.post("/api/generate", json=long) as other:  # another user's stream
        assert other.status == 200
        assert json.loads(await other.content.readline())["done"] is False
        for fmt in (HUGE_ARRAY, {**HUGE_ARRAY, "maxItems": 50_000}):
            body = {"model": "tiny", "prompt": "List words.", "format": fmt, "stream": False}
            status, reply = await post(session, "/api/generate", body)
            assert status == 400, reply
            assert 'field "format": maxItems' in reply["error"], reply
        rest = [json.loads(line) async for line in other.content if line.strip()]
    assert rest[-1]["done"] and "error" not in rest[-1], rest[-1]
    status, after = await post(
        session, "/api/generate", {**ask, "stream": False, "options": greedy}
    )
    assert status == 200 and after["response"] == before["response"], after
    jsonschema.validate(json.loads(after["response"]), PERSON)
    assert runner_processes(daemon) == [runner]  # the same process served all of it
