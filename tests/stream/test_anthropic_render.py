"""Anthropic's renderer over the one render loop: the event sequence of a stream (blocks opened,
filled and closed in order), the whole message, and the error object; and the named SSE
encoder its streams need."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from olla.stream.anthropic import SIGNATURE, AnthropicRenderer, error_body
from olla.stream.assembler import render
from olla.stream.encoders import NAMED_SSE, SSE
from olla.stream.reasoning import ReasoningFormat
from olla.wire.messages import Chunk, Done, Event

DONE = Done(1, "stop", prompt_eval_count=5, eval_count=3)
THINKS = ReasoningFormat("<think>", "</think>", inside=True)
CALL = '<tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call>'


async def _events(*events: Event) -> AsyncGenerator[Event, None]:
    for event in events:
        yield event


async def _lines(
    *events: Event,
    stream: bool = True,
    tools: bool = False,
    reasoning: ReasoningFormat | None = None,
) -> list[dict[str, Any]]:
    renderer = AnthropicRenderer("msg_1", "m:latest")
    names = {"weather"} if tools else None
    return [line async for line in render(_events(*events), renderer, stream, names, reasoning)]


def _shape(lines: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """Each event's type, with its block's index and the type of its block or delta."""
    out: list[tuple[str, ...]] = []
    for line in lines:
        kind = line["type"]
        if kind == "content_block_start":
            out.append((kind, str(line["index"]), line["content_block"]["type"]))
        elif kind == "content_block_delta":
            out.append((kind, str(line["index"]), line["delta"]["type"]))
        elif kind == "content_block_stop":
            out.append((kind, str(line["index"])))
        else:
            out.append((kind,))
    return out


async def test_a_text_stream_is_one_block_between_start_and_stop() -> None:
    lines = await _lines(Chunk(1, "Hel"), Chunk(1, "lo"), DONE)
    assert _shape(lines) == [
        ("message_start",),
        ("ping",),
        ("content_block_start", "0", "text"),
        ("content_block_delta", "0", "text_delta"),
        ("content_block_delta", "0", "text_delta"),
        ("content_block_stop", "0"),
        ("message_delta",),
        ("message_stop",),
    ]
    start = lines[0]["message"]
    assert start["id"] == "msg_1" and start["role"] == "assistant" and start["content"] == []
    assert start["model"] == "m:latest" and start["stop_reason"] is None
    assert "".join(line["delta"]["text"] for line in lines[3:5]) == "Hello"
    assert lines[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert lines[-2]["usage"] == {"input_tokens": 5, "output_tokens": 3}


async def test_thinking_then_text_are_two_blocks_and_the_thinking_is_signed() -> None:
    lines = await _lines(Chunk(1, "hmm"), Chunk(1, "</think>Hi"), DONE, reasoning=THINKS)
    assert _shape(lines)[2:-2] == [
        ("content_block_start", "0", "thinking"),
        ("content_block_delta", "0", "thinking_delta"),
        ("content_block_delta", "0", "signature_delta"),
        ("content_block_stop", "0"),
        ("content_block_start", "1", "text"),
        ("content_block_delta", "1", "text_delta"),
        ("content_block_stop", "1"),
    ]
    assert lines[2]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert lines[4]["delta"] == {"type": "signature_delta", "signature": SIGNATURE}

    whole = (await _lines(Chunk(1, "hmm"), Chunk(1, "</think>Hi"), DONE, stream=False))[0]
    assert whole["content"] == [{"type": "text", "text": "hmm</think>Hi"}]  # no reasoning format
    whole = (
        await _lines(Chunk(1, "hmm"), Chunk(1, "</think>Hi"), DONE, stream=False, reasoning=THINKS)
    )[0]
    assert whole["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": SIGNATURE},
        {"type": "text", "text": "Hi"},
    ]


async def test_a_tool_call_is_a_tool_use_block_with_its_input_as_json() -> None:
    lines = await _lines(Chunk(1, CALL), DONE, tools=True)
    assert _shape(lines)[2:] == [
        ("content_block_start", "0", "tool_use"),
        ("content_block_delta", "0", "input_json_delta"),
        ("content_block_stop", "0"),
        ("message_delta",),
        ("message_stop",),
    ]
    block = lines[2]["content_block"]
    assert block["name"] == "weather" and block["input"] == {} and block["id"].startswith("toolu_")
    assert json.loads(lines[3]["delta"]["partial_json"]) == {"city": "Oslo"}
    assert lines[-2]["delta"]["stop_reason"] == "tool_use"

    [whole] = await _lines(Chunk(1, CALL), DONE, stream=False, tools=True)
    [use] = whole["content"]
    assert use["type"] == "tool_use" and use["input"] == {"city": "Oslo"} and use["id"]
    assert whole["stop_reason"] == "tool_use" and whole["type"] == "message"


async def test_text_before_a_call_closes_before_the_call_opens() -> None:
    lines = await _lines(Chunk(1, "Let me look. "), Chunk(1, CALL), DONE, tools=True)
    kinds = _shape(lines)[2:-2]
    assert kinds[0] == ("content_block_start", "0", "text")
    assert ("content_block_stop", "0") in kinds
    assert kinds.index(("content_block_stop", "0")) < kinds.index(
        ("content_block_start", "1", "tool_use")
    )


async def test_the_length_limit_is_max_tokens_and_usage_counts_both_sides() -> None:
    [whole] = await _lines(Chunk(1, "Hi"), Done(1, "length", 7, 0, 2), stream=False)
    assert whole["stop_reason"] == "max_tokens" and whole["stop_sequence"] is None
    assert whole["usage"] == {"input_tokens": 7, "output_tokens": 2}
    assert whole["content"] == [{"type": "text", "text": "Hi"}]


async def test_a_stop_sequence_is_named_as_the_stop_reason() -> None:
    stopped = Done(1, "stop", 5, eval_count=2, stop_sequence="###")
    [whole] = await _lines(Chunk(1, "Hi"), stopped, stream=False)
    assert (whole["stop_reason"], whole["stop_sequence"]) == ("stop_sequence", "###")
    lines = await _lines(Chunk(1, "Hi"), stopped)
    assert lines[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "###"}


def test_errors_take_anthropics_types_by_status() -> None:
    assert error_body(404, "no model") == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no model"},
    }
    kinds = {s: error_body(s, "x")["error"]["type"] for s in (400, 401, 403, 429, 500, 503, 504)}
    assert kinds == {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        429: "rate_limit_error",
        500: "api_error",
        503: "overloaded_error",
        504: "timeout_error",
    }


def test_named_events_carry_the_type_and_the_plain_sse_does_not() -> None:
    assert NAMED_SSE.line({"type": "ping"}) == b'event: ping\ndata: {"type": "ping"}\n\n'
    assert NAMED_SSE.trailer == b""  # Anthropic's streams end with message_stop, no [DONE]
    assert SSE.line({"type": "ping"}) == b'data: {"type": "ping"}\n\n'
