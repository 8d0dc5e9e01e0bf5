"""The Responses renderer over runner events: the event sequence the official SDK's stream helper
accepts, and a whole Response its types validate. Events validate against the `openai` package's
own models (pydantic, strict about the fields they require)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from olla.errors import InvalidRequest
from olla.server.middleware import describe
from olla.stream.assembler import render
from olla.stream.encoders import NAMED_SSE
from olla.stream.reasoning import ReasoningFormat
from olla.stream.responses import ResponsesRenderer
from olla.wire.messages import Chunk, Done, Event

DONE = Done(1, "stop", prompt_eval_count=5, prompt_cached_count=2, eval_count=3)
CALL = '<tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call>'
SETTINGS = {"tools": [], "tool_choice": "auto", "parallel_tool_calls": True, "store": False}
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


async def _events(*events: Event, error: Exception | None = None) -> AsyncGenerator[Event, None]:
    for event in events:
        yield event
    if error is not None:
        raise error


def _renderer() -> ResponsesRenderer:
    return ResponsesRenderer("resp_1", 1700000000, "m:latest", SETTINGS)


async def _lines(
    renderer: ResponsesRenderer,
    events: AsyncGenerator[Event, None],
    stream: bool,
    tools: bool = False,
    reasoning: ReasoningFormat | None = None,
) -> list[dict[str, Any]]:
    names = {"weather"} if tools else None
    return [line async for line in render(events, renderer, stream, names, reasoning)]


def _through_sdk(lines: list[dict[str, Any]]) -> ResponseStreamState[Any]:
    """Feed the events to the SDK's stream helper state, as `client.responses.stream` does."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=[], text_format=omit)
    for line in lines:
        state.handle_event(EVENTS.validate_python(line))
    return state


async def test_a_streamed_answer_is_the_sequence_the_sdk_reads() -> None:
    lines = await _lines(_renderer(), _events(Chunk(1, "Hel"), Chunk(1, "lo"), DONE), True)
    assert [line["type"] for line in lines] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [line["sequence_number"] for line in lines] == list(range(len(lines)))
    final = _through_sdk(lines)._completed_response
    assert final is not None and final.output_text == "Hello" and final.status == "completed"
    assert final.usage is not None and final.usage.input_tokens_details.cached_tokens == 2
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens) == (
        5,
        3,
        8,
    )


async def test_the_whole_answer_is_a_response_with_what_the_stream_gave() -> None:
    chunks = (Chunk(1, "Hel"), Chunk(1, "lo"), DONE)
    whole = Response.model_validate((await _lines(_renderer(), _events(*chunks), False))[0])
    streamed = await _lines(_renderer(), _events(*chunks), True)
    final = Response.model_validate(streamed[-1]["response"])
    assert whole.output_text == final.output_text == "Hello"
    assert whole.id == final.id == "resp_1" and whole.model == "m:latest"
    assert whole.usage == final.usage and whole.status == final.status == "completed"
    assert [o.type for o in whole.output] == [o.type for o in final.output] == ["message"]


async def test_a_tool_call_is_a_function_call_item_with_its_arguments() -> None:
    chunks = [Chunk(1, CALL[:10]), Chunk(1, CALL[10:]), DONE]
    streamed = await _lines(_renderer(), _events(*chunks), True, tools=True)
    types = [line["type"] for line in streamed]
    assert "response.output_text.delta" not in types
    assert types[2:-1] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    (call,) = _through_sdk(streamed)._completed_response.output  # type: ignore[union-attr]
    assert call.type == "function_call" and call.name == "weather"
    assert json.loads(call.arguments) == {"city": "Oslo"} and call.call_id.startswith("call_")
    (line,) = await _lines(_renderer(), _events(*chunks), False, tools=True)
    (item,) = Response.model_validate(line).output
    assert item.type == "function_call" and json.loads(item.arguments) == {"city": "Oslo"}


async def test_reasoning_is_an_item_with_its_summary_before_the_message() -> None:
    thinking = ReasoningFormat("<think>", "</think>", inside=True)
    chunks = (Chunk(1, "hm"), Chunk(1, "m</think>"), Chunk(1, "Yes"), DONE)
    streamed = await _lines(_renderer(), _events(*chunks), True, reasoning=thinking)
    types = [line["type"] for line in streamed]
    assert types.index("response.reasoning_summary_text.delta") < types.index(
        "response.output_text.delta"
    )
    final = _through_sdk(streamed)._completed_response
    assert final is not None
    reasoning, message = final.output
    assert reasoning.type == "reasoning" and [s.text for s in reasoning.summary] == ["hmm"]
    assert message.type == "message" and final.output_text == "Yes"
    (line,) = await _lines(_renderer(), _events(*chunks), False, reasoning=thinking)
    whole = Response.model_validate(line)
    assert [o.type for o in whole.output] == ["reasoning", "message"]
    assert whole.output[0].summary[0].text == "hmm"  # type: ignore[union-attr]


async def test_an_answer_cut_at_max_output_tokens_is_incomplete() -> None:
    cut = Done(1, "length", prompt_eval_count=5, eval_count=2)
    streamed = await _lines(_renderer(), _events(Chunk(1, "ab"), cut), True)
    assert streamed[-1]["type"] == "response.incomplete"
    final = Response.model_validate(streamed[-1]["response"])
    assert final.status == "incomplete" and final.incomplete_details is not None
    assert final.incomplete_details.reason == "max_output_tokens"
    assert final.output[0].status == "incomplete"  # type: ignore[union-attr]
    (line,) = await _lines(_renderer(), _events(Chunk(1, "ab"), cut), False)
    assert Response.model_validate(line).incomplete_details == final.incomplete_details


async def test_an_empty_answer_is_an_empty_message() -> None:
    streamed = await _lines(_renderer(), _events(DONE), True)
    final = _through_sdk(streamed)._completed_response
    assert final is not None and final.output_text == "" and len(final.output) == 1


async def test_an_error_after_the_start_is_a_last_response_failed_event() -> None:
    renderer = _renderer()
    lines = render(_events(Chunk(1, "a"), error=InvalidRequest("bad")), renderer, True, None)
    seen = []
    with pytest.raises(InvalidRequest) as caught:
        async for line in lines:
            seen.append(line)
    failed = renderer.failed(*describe(caught.value))
    assert failed["type"] == "response.failed"
    assert failed["sequence_number"] == seen[-1]["sequence_number"] + 1
    event = EVENTS.validate_python(failed)
    assert event.response.status == "failed" and event.response.error.message == "bad"


def test_the_encoder_names_each_event() -> None:
    line = {"type": "response.created", "sequence_number": 0}
    assert NAMED_SSE.line(line) == (
        b'event: response.created\ndata: {"type": "response.created", "sequence_number": 0}\n\n'
    )
    assert NAMED_SSE.trailer == b""
