"""An answer rendered for each API from the same runner events: streamed, whole, with tool calls
and log-probabilities."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from olla.errors import InvalidRequest
from olla.stream import ollama, openai
from olla.stream.assembler import Renderer, render
from olla.stream.reasoning import ReasoningFormat
from olla.wire.messages import Chunk, Done, Event, Logprob

DONE = Done(1, "stop", prompt_eval_count=5, eval_count=3, context=(1, 2))
CALL = '<tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call>'


async def _events(*events: Event, error: Exception | None = None) -> AsyncGenerator[Event, None]:
    for event in events:
        yield event
    if error is not None:
        raise error


async def _lines(
    renderer: Renderer,
    events: AsyncGenerator[Event, None],
    stream: bool,
    tools: bool = False,
    reasoning: ReasoningFormat | None = None,
) -> list[dict[str, Any]]:
    names = {"weather"} if tools else None
    return [line async for line in render(events, renderer, stream, names, reasoning)]


def _ollama(kind: str = ollama.CHAT) -> ollama.OllamaRenderer:
    return ollama.OllamaRenderer("m:latest", kind, started_ns=0, load_ns=7)


def _without_time(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in line.items() if k not in ("created_at", "total_duration")}
        for line in lines
    ]


async def test_ollama_chat_streams_each_chunk_then_the_counts() -> None:
    lines = await _lines(_ollama(), _events(Chunk(1, "Hel"), Chunk(1, "lo"), DONE), stream=True)
    assert _without_time(lines) == [
        {"model": "m:latest", "message": {"role": "assistant", "content": "Hel"}, "done": False},
        {"model": "m:latest", "message": {"role": "assistant", "content": "lo"}, "done": False},
        {
            "model": "m:latest",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "load_duration": 7,
            "prompt_eval_count": 5,
            "prompt_eval_duration": 0,
            "eval_count": 3,
            "eval_duration": 0,
        },
    ]


async def test_ollama_generate_whole_has_the_text_the_context_and_the_logprobs() -> None:
    entry = Logprob("a", -0.25, (97,))
    events = _events(Chunk(1, "a", (entry,)), Chunk(1, "b"), DONE)
    (line,) = await _lines(_ollama(ollama.GENERATE), events, stream=False)
    assert line["response"] == "ab" and line["done"] and line["context"] == [1, 2]
    assert line["logprobs"] == [{"token": "a", "logprob": -0.25, "bytes": [97], "top_logprobs": []}]


async def test_a_tool_call_is_held_back_and_comes_as_tool_calls() -> None:
    chunks = [Chunk(1, CALL[:10]), Chunk(1, CALL[10:]), DONE]
    streamed = await _lines(_ollama(), _events(*chunks), stream=True, tools=True)
    assert len(streamed) == 2  # the call, then the counts: no text line with the call's text
    message = streamed[0]["message"]
    assert message["content"] == ""
    (call,) = message["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["function"] == {"index": 0, "name": "weather", "arguments": {"city": "Oslo"}}
    (whole,) = await _lines(_ollama(), _events(*chunks), stream=False, tools=True)
    (again,) = whole["message"]["tool_calls"]
    assert again["function"] == call["function"]


async def test_each_call_streams_as_soon_as_it_closes_and_indexes_count_on() -> None:
    second = CALL.replace("Oslo", "Rome")
    chunks = [Chunk(1, CALL), Chunk(1, " " + second[:20]), Chunk(1, second[20:] + " Done."), DONE]
    streamed = await _lines(_ollama(), _events(*chunks), stream=True, tools=True)
    calls = [line["message"].get("tool_calls") for line in streamed]
    assert calls[0] is not None and calls[0][0]["function"]["index"] == 0  # before the second
    first_index, second_index = (c[0]["function"]["index"] for c in calls if c is not None)
    assert (first_index, second_index) == (0, 1)
    assert "".join(line["message"]["content"] for line in streamed) == "Done."
    events = _events(*chunks)
    openai_lines = await _lines(_openai(), events, stream=True, tools=True)
    indexes = [
        call["index"]
        for line in openai_lines
        for choice in line["choices"]
        for call in choice["delta"].get("tool_calls", [])
    ]
    assert indexes == [0, 1]


def _openai(
    kind: str = openai.CHAT, logprobs: int | None = None, usage: bool = False
) -> openai.OpenAIRenderer:
    return openai.OpenAIRenderer(kind, "id-1", 1700000000, "m:latest", logprobs, usage)


async def test_openai_chat_stream_opens_with_the_role_and_ends_with_the_finish_and_usage() -> None:
    lines = await _lines(_openai(usage=True), _events(Chunk(1, "Hi"), DONE), stream=True)
    deltas = [line["choices"][0]["delta"] if line["choices"] else None for line in lines]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Hi"}, {}, None]
    assert lines[2]["choices"][0]["finish_reason"] == "stop"
    assert lines[3]["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "total_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert {line["object"] for line in lines} == {"chat.completion.chunk"}


async def test_openai_chat_whole_with_a_call_has_null_content_and_finish_tool_calls() -> None:
    (body,) = await _lines(_openai(), _events(Chunk(1, CALL), DONE), stream=False, tools=True)
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "weather", "arguments": json.dumps({"city": "Oslo"})}
    assert "index" not in call and call["id"].startswith("call_")


async def test_legacy_completions_show_logprobs_as_parallel_lists() -> None:
    entries = (
        Logprob("ab", -1.0, (97, 98), (Logprob("ab", -1.0, (97, 98)),)),
        Logprob("c", -2.0, (99,)),
    )
    events = _events(Chunk(1, "abc", entries), Done(1, "length", eval_count=2))
    (body,) = await _lines(_openai(openai.COMPLETION, logprobs=1), events, stream=False)
    (choice,) = body["choices"]
    assert choice["text"] == "abc" and choice["finish_reason"] == "length"
    assert choice["logprobs"] == {
        "tokens": ["ab", "c"],
        "token_logprobs": [-1.0, -2.0],
        "top_logprobs": [{"ab": -1.0}, {}],
        "text_offset": [0, 2],
    }


@pytest.mark.parametrize("stream", [True, False])
async def test_nothing_is_rendered_before_the_runner_answers(stream: bool) -> None:
    failing = _events(error=InvalidRequest("the prompt is too long"))
    renderer = _openai()
    lines = render(failing, renderer, stream, None)
    with pytest.raises(InvalidRequest):
        await anext(lines)  # not even the role chunk: the error gets its own status


async def test_closing_the_lines_closes_the_runners_events() -> None:
    closed = []

    async def events() -> AsyncGenerator[Event, None]:
        try:
            yield Chunk(1, "a")
            yield Chunk(1, "b")
        finally:
            closed.append(True)

    lines = render(events(), _ollama(), True, None)
    await anext(lines)
    await lines.aclose()
    assert closed == [True]


THINK = ReasoningFormat("<think>", "</think>")


async def test_reasoning_split_across_chunks_never_reaches_the_content() -> None:
    pieces = ["<thi", "nk>Let me", " see.</th", "ink>\n\nIt is ", "blue."]
    events = _events(*(Chunk(1, p) for p in pieces), DONE)
    streamed = await _lines(_ollama(), events, stream=True, reasoning=THINK)
    thinking = "".join(line["message"].get("thinking", "") for line in streamed)
    content = "".join(line["message"]["content"] for line in streamed)
    assert (thinking, content) == ("Let me see.", "It is blue.")
    (whole,) = await _lines(
        _ollama(), _events(*(Chunk(1, p) for p in pieces), DONE), stream=False, reasoning=THINK
    )
    assert whole["message"]["thinking"] == thinking and whole["message"]["content"] == content
    generate = _ollama(ollama.GENERATE)
    (answer,) = await _lines(
        generate, _events(Chunk(1, "<think>a</think>b"), DONE), stream=False, reasoning=THINK
    )
    assert (answer["thinking"], answer["response"]) == ("a", "b")


async def test_openai_sends_reasoning_and_content_of_one_piece_as_two_chunks() -> None:
    events = _events(Chunk(1, "<think>hmm</think>ok"), DONE)
    lines = await _lines(_openai(), events, stream=True, reasoning=THINK)
    deltas = [line["choices"][0]["delta"] for line in lines if line["choices"]]
    assert deltas[1] == {"reasoning": "hmm", "reasoning_content": "hmm"}  # no content key
    assert deltas[2] == {"content": "ok"}
    (body,) = await _lines(
        _openai(), _events(Chunk(1, "<think>hmm</think>ok"), DONE), stream=False, reasoning=THINK
    )
    message = body["choices"][0]["message"]
    assert (message["content"], message["reasoning"], message["reasoning_content"]) == (
        "ok",
        "hmm",
        "hmm",
    )
