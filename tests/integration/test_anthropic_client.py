"""The official `anthropic` client against a real daemon and SmolLM2: only the base URL changes.
Create, stream (the SDK's helper and raw events), a tool round trip, count_tokens, thinking and
errors. One daemon serves the module (each test names what it needs)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import jsonschema
import pytest

from tests.conftest import MODELFILE, Daemon, make_daemon
from tests.integration.test_official_clients import TOOLS_TEMPLATE
from tests.integration.test_thinking import THINKER

MODEL = "smollm2:135m"
QUESTION: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]
# the client (2.17) no longer takes sampling fields as arguments; clients send them in the body
GREEDY: dict[str, Any] = {"max_tokens": 24, "extra_body": {"temperature": 0}}
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": CITY_SCHEMA,
}
ASK_WEATHER: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


def _create(d: Daemon, name: str, modelfile: Path) -> None:
    command = [sys.executable, "-m", "olla", "create", name, "-f", str(modelfile)]
    created = subprocess.run(command, env=d.env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Daemon]:
    d = make_daemon(tmp_path_factory.mktemp("anthropic"))
    d.start()
    _create(d, MODEL, MODELFILE)
    models = tmp_path_factory.mktemp("models")
    (models / "tooly").write_text(f'FROM {MODEL}\nTEMPLATE """{TOOLS_TEMPLATE}"""\n')
    _create(d, "tooly", models / "tooly")
    (models / "thinker").write_text(f'FROM {MODEL}\nTEMPLATE """{THINKER}"""\n')
    _create(d, "thinker", models / "thinker")
    yield d
    d.stop()


def _blocks(message: Any) -> list[dict[str, Any]]:
    """A message's content blocks as plain values (the stream helper's blocks are subclasses)."""
    return [b.model_dump(exclude_none=True, exclude={"parsed_output"}) for b in message.content]


@pytest.fixture
def client(served: Daemon) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=served.base_url, api_key="unused", max_retries=0)


def test_create_whole_and_streamed_agree(client: anthropic.Anthropic) -> None:
    whole = client.messages.create(model=MODEL, messages=QUESTION, **GREEDY)
    assert whole.type == "message" and whole.role == "assistant" and whole.id.startswith("msg_")
    assert whole.model == MODEL and whole.stop_reason in ("end_turn", "max_tokens")
    [block] = whole.content
    assert block.type == "text" and block.text.strip()
    assert whole.usage.input_tokens > 0 and 0 < whole.usage.output_tokens <= 24

    with client.messages.stream(model=MODEL, messages=QUESTION, **GREEDY) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == block.text  # greedy: streamed and whole agree
    assert _blocks(final) == _blocks(whole) and final.stop_reason == whole.stop_reason
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_raw_events_come_in_anthropics_order(client: anthropic.Anthropic) -> None:
    events = list(client.messages.create(model=MODEL, messages=QUESTION, stream=True, **GREEDY))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]  # the SDK skips the ping
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    start = events[0]
    assert start.type == "message_start" and start.message.content == []
    delta = events[-2]
    assert delta.type == "message_delta" and delta.delta.stop_reason in ("end_turn", "max_tokens")
    # the prompt's count is known at the end: message_delta carries both counts
    assert delta.usage.input_tokens and delta.usage.input_tokens > 0
    assert 0 < delta.usage.output_tokens <= 24


def test_a_raw_stream_names_each_event_and_pings_once(served: Daemon) -> None:
    body = {"model": MODEL, "messages": QUESTION, "stream": True, "max_tokens": 8}

    async def lines() -> list[str]:
        async with aiohttp.ClientSession(base_url=served.base_url) as s:
            async with s.post("/v1/messages", json=body) as r:
                assert r.headers["Content-Type"].startswith("text/event-stream")
                return [line.decode().rstrip("\n") async for line in r.content]

    raw = asyncio.run(lines())
    names = [line.removeprefix("event: ") for line in raw if line.startswith("event: ")]
    datas = [line for line in raw if line.startswith("data: ")]
    assert len(names) == len(datas) and names[:2] == ["message_start", "ping"]
    assert names.count("ping") == 1 and names[-1] == "message_stop"
    assert "data: [DONE]" not in raw


def test_max_tokens_stop_sequences_and_sampling(client: anthropic.Anthropic) -> None:
    short = client.messages.create(model=MODEL, messages=QUESTION, max_tokens=3)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3

    def answer(stop: list[str] | None) -> anthropic.types.Message:
        extra: Any = {"stop_sequences": stop} if stop else {}
        sampling = {"temperature": 0, "top_p": 0.9, "top_k": 20}
        return client.messages.create(
            model=MODEL, messages=QUESTION, max_tokens=24, extra_body=sampling, **extra
        )

    first = answer(None).content[0]
    assert first.type == "text"
    words = first.text.split()
    assert len(words) >= 3, first.text
    stop = words[len(words) // 2]  # a word from the middle of the answer greedy gives without it
    stopped = answer(["never in it", stop])
    [cut] = stopped.content
    assert cut.type == "text" and cut.text == first.text.split(stop)[0]
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", stop)
    with client.messages.stream(
        model=MODEL,
        messages=QUESTION,
        max_tokens=24,
        stop_sequences=[stop],
        extra_body={"temperature": 0, "top_p": 0.9, "top_k": 20},
    ) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)
    assert _blocks(final) == _blocks(stopped)


def test_system_prompt_and_a_multi_turn_history(client: anthropic.Anthropic) -> None:
    history: Any = [
        {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Blue."}]},
        {"role": "user", "content": "Another one?"},
    ]
    system: Any = [{"type": "text", "text": "You answer in one word."}]
    reply = client.messages.create(model=MODEL, system=system, messages=history, **GREEDY)
    plain = client.messages.create(model=MODEL, messages=history, **GREEDY)
    counted = client.messages.count_tokens(model=MODEL, system=system, messages=history)
    # the system prompt takes the place of the template's default one
    assert reply.usage.input_tokens == counted.input_tokens != plain.usage.input_tokens
    assert reply.content[0].type == "text" and reply.content[0].text


def test_count_tokens_equals_the_input_tokens_of_a_create(client: anthropic.Anthropic) -> None:
    system = "You are terse."
    counted = client.messages.count_tokens(model=MODEL, system=system, messages=QUESTION)
    created = client.messages.create(model=MODEL, system=system, messages=QUESTION, **GREEDY)
    assert counted.input_tokens == created.usage.input_tokens > 0
    longer = client.messages.count_tokens(
        model=MODEL, system=system, messages=[{"role": "user", "content": "word " * 50}]
    )
    assert longer.input_tokens > counted.input_tokens + 40


def test_a_forced_tool_use_round_trip(client: anthropic.Anthropic) -> None:
    forced = client.messages.create(
        model="tooly",
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        max_tokens=60,
        extra_body={"temperature": 0},
    )
    assert forced.stop_reason == "tool_use"
    [use] = [b for b in forced.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.id.startswith("toolu_")
    jsonschema.validate(use.input, CITY_SCHEMA)

    answered = client.messages.create(
        model="tooly",
        max_tokens=40,
        tools=[WEATHER],
        messages=[
            *ASK_WEATHER,
            {"role": "assistant", "content": [b.model_dump() for b in forced.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "18 C and sunny"}
                ],
            },
        ],
    )
    assert answered.content and answered.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert answered.usage.input_tokens > forced.usage.input_tokens  # the result was read

    with client.messages.stream(
        model="tooly",
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        max_tokens=60,
        extra_body={"temperature": 0},
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    starts = [e for e in events if e.type == "content_block_start"]
    assert [s.content_block.type for s in starts] == ["tool_use"]
    [streamed] = final.content
    assert streamed.type == "tool_use" and streamed.name == "get_weather"
    assert streamed.input == use.input and final.stop_reason == "tool_use"  # greedy: the same


def test_output_config_format_is_json_that_fits_the_schema(client: anthropic.Anthropic) -> None:
    shaped = client.messages.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=200,
        output_config={"format": {"type": "json_schema", "schema": CITY_SCHEMA}},
    )
    [block] = shaped.content
    assert block.type == "text"
    jsonschema.validate(json.loads(block.text), CITY_SCHEMA)


def test_thinking_blocks_from_a_thinking_model(client: anthropic.Anthropic) -> None:
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    ask: Any = [{"role": "user", "content": "Why is the sky blue?"}]
    whole = client.messages.create(model="thinker", messages=ask, thinking=thinking, **GREEDY)
    assert whole.content[0].type == "thinking" and whole.content[0].thinking
    assert whole.content[0].signature
    assert all(b.type == "text" for b in whole.content[1:])
    with client.messages.stream(
        model="thinker", messages=ask, thinking=thinking, **GREEDY
    ) as stream:
        final = stream.get_final_message()
    assert _blocks(final) == _blocks(whole)  # greedy: the blocks streamed are the blocks whole

    off = client.messages.create(
        model="thinker", messages=ask, thinking={"type": "disabled"}, **GREEDY
    )
    assert [b.type for b in off.content] == ["text"]
    # a model that cannot think answers anyway (as Ollama relaxes it for Claude Code)
    plain = client.messages.create(model=MODEL, messages=ask, thinking=thinking, **GREEDY)
    assert [b.type for b in plain.content] == ["text"]
    # earlier reasoning sent back with a signature is taken
    again = client.messages.create(
        model="thinker",
        thinking=thinking,
        messages=[
            *ask,
            {"role": "assistant", "content": [b.model_dump() for b in whole.content]},
            {"role": "user", "content": "And at sunset?"},
        ],
        **GREEDY,
    )
    assert again.content[0].type == "thinking"


def test_errors_are_typed(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope", messages=QUESTION, max_tokens=8)
    assert "nope" in missing.value.message and missing.value.type == "not_found_error"
    with pytest.raises(anthropic.BadRequestError, match="temperature") as bad:
        client.messages.create(
            model=MODEL, messages=QUESTION, max_tokens=8, extra_body={"temperature": 3}
        )
    assert bad.value.type == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        client.messages.create(model=MODEL, messages=QUESTION, max_tokens=0)
    image: Any = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                               "data": "AA=="}}  # fmt: skip
    with pytest.raises(anthropic.BadRequestError, match="does not support vision"):
        client.messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": [image]}]
        )
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nope", messages=QUESTION)


def test_keys_by_x_api_key_or_bearer(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    made = subprocess.run(
        [sys.executable, "-m", "olla", "keys", "add", "agent"],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()

    def client(headers: dict[str, Any], **auth: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=daemon.base_url, max_retries=0, default_headers=headers, **auth
        )

    ask: Any = {"model": "nope", "messages": QUESTION, "max_tokens": 8}
    with pytest.raises(anthropic.AuthenticationError) as wrong:
        client({}, api_key="olla_wrong").messages.create(**ask)
    assert wrong.value.type == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError, match="x-api-key"):
        client({"Authorization": anthropic.Omit()}).messages.create(**ask)  # no key at all
    # past the key check: the model is what is missing
    with pytest.raises(anthropic.NotFoundError):
        client({"X-Api-Key": key}).messages.create(**ask)  # as Claude Code sends its key
    with pytest.raises(anthropic.NotFoundError):
        client({}, api_key=key).messages.create(**ask)  # this client: Authorization: Bearer
