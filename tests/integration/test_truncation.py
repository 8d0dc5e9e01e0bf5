"""A chat longer than the context through a real daemon: its oldest turns are dropped (Ollama's
`truncate`, on by default) and it is answered as if the client had sent only what was kept."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Daemon, make_daemon, wait_for
from tests.daemon_helpers import create_tiny

NUM_CTX = 512
OPTIONS = {"temperature": 0, "num_predict": 8, "num_ctx": NUM_CTX}
SYSTEM = {"role": "system", "content": "You are a terse assistant who answers in one line."}


def history(turns: int) -> list[dict[str, str]]:
    """`turns` questions and answers of about 40 tokens each, then one more question."""
    out = [SYSTEM]
    for i in range(turns):
        out.append(
            {
                "role": "user",
                "content": f"Question {i}: what comes after {i * 7} in "
                "the sequence that counts up by seven, starting at zero?",
            }
        )
        out.append(
            {
                "role": "assistant",
                "content": f"After {i * 7} comes {i * 7 + 7}, since "
                "each step of that sequence adds seven to the number before it.",
            }
        )
    out.append({"role": "user", "content": "And what comes after 210?"})
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Daemon]:
    d = make_daemon(tmp_path_factory.mktemp("truncation"))
    d.start()
    asyncio.run(create_tiny(d, smollm2_gguf))
    yield d
    d.stop()


async def chat(d: Daemon, messages: list[dict[str, str]], **fields: Any) -> tuple[int, Any]:
    body = {"model": "tiny", "messages": messages, "options": OPTIONS, "stream": False, **fields}
    async with aiohttp.ClientSession(base_url=d.base_url) as s:
        async with s.post("/api/chat", json=body) as r:
            return r.status, await r.json()


def dropped_in_log(d: Daemon, before: int) -> int:
    """The messages_dropped of the first request logged after `before` characters of log."""
    pattern = re.compile(r"messages_dropped=(\d+)")
    wait_for(lambda: pattern.search(d.log()[before:]) is not None, 10, "the request's log line")
    found = pattern.search(d.log()[before:])
    assert found is not None
    return int(found.group(1))


async def test_a_30_turn_chat_in_a_512_token_context_is_answered_from_its_latest_turns(
    served: Daemon,
) -> None:
    messages = history(30)
    before = len(served.log())
    status, reply = await chat(served, messages)
    assert status == 200, reply
    assert 0 < reply["prompt_eval_count"] <= NUM_CTX - OPTIONS["num_predict"]
    assert reply["eval_count"] == OPTIONS["num_predict"] and reply["message"]["content"]
    dropped = dropped_in_log(served, before)
    assert dropped > 0 and dropped % 2 == 0  # whole turns, oldest first
    # the same as sending the system message and the kept turns, with nothing dropped
    kept = [SYSTEM, *messages[1 + dropped :]]
    status, by_hand = await chat(served, kept, truncate=False)
    assert status == 200, by_hand
    assert by_hand["message"]["content"] == reply["message"]["content"]
    assert by_hand["prompt_eval_count"] == reply["prompt_eval_count"]
    # as much history as fits: one turn more would not have
    status, over = await chat(served, [SYSTEM, *messages[dropped - 1 :]], truncate=False)
    assert status == 400 or over["prompt_eval_count"] > NUM_CTX - OPTIONS["num_predict"]


async def test_truncate_false_keeps_the_400(served: Daemon) -> None:
    status, reply = await chat(served, history(30), truncate=False)
    assert status == 400
    assert "num_ctx" in reply["error"]


async def test_a_chat_that_fits_is_sent_whole(served: Daemon) -> None:
    before = len(served.log())
    status, reply = await chat(served, history(2))
    assert status == 200 and reply["prompt_eval_count"] > 100
    wait_for(lambda: "POST /api/chat -> 200" in served.log()[before:], 10, "the log line")
    assert "messages_dropped" not in served.log()[before:]
