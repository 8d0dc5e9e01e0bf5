"""A /v1/responses body checked and turned into olla's request: input items as chat messages,
tools and tool_choice, text.format, and the fields that would need olla to keep state."""

from __future__ import annotations

from typing import Any

import pytest

from olla.chat import Message
from olla.errors import InvalidRequest
from olla.server.responses_requests import ResponsesJob, parse_responses
from olla.tool_calls import call_schema

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CHAT_WEATHER = {
    "type": "function",
    "function": {k: v for k, v in WEATHER.items() if k != "type"},
}


def _job(**body: Any) -> ResponsesJob:
    return parse_responses({"model": "m", "input": "hi", **body})


def _refused(**body: Any) -> str:
    with pytest.raises(InvalidRequest) as caught:
        _job(**body)
    return caught.value.message


def test_a_string_input_is_a_user_message_after_the_instructions() -> None:
    job = _job(instructions="Be brief.", max_output_tokens=7, temperature=0.5)
    assert job.messages == (Message("system", "Be brief."), Message("user", "hi"))
    assert job.options == {"temperature": 0.5, "num_predict": 7}
    assert job.id.startswith("resp_") and not job.stream and job.fmt is None
    assert job.echo["instructions"] == "Be brief." and job.echo["max_output_tokens"] == 7


def test_message_items_take_text_parts_and_developer_is_system() -> None:
    job = _job(
        input=[
            {"role": "developer", "content": "rules"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "b"}]},
        ]
    )
    assert job.messages == (
        Message("system", "rules"),
        Message("user", "a"),
        Message("assistant", "b"),
    )


def test_a_function_call_round_trip_becomes_a_call_and_its_tool_answer() -> None:
    job = _job(
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "t"}]},
            {"type": "message", "role": "assistant", "content": "Let me look."},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        ],
        tools=[WEATHER],
    )
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    assert job.messages[1:] == (
        {
            "role": "assistant",
            "content": "Let me look.",
            "thinking": "t",
            "tool_calls": [{**call, "id": "call_1"}],
        },
        {
            "role": "tool",
            "content": "sunny",
            "tool_call_id": "call_1",
            "tool_name": "get_weather",
            "name": "get_weather",
        },
    )
    assert job.tools == (CHAT_WEATHER,)


def test_calls_without_a_message_start_an_assistant_turn_and_share_it() -> None:
    calls = [
        {"type": "function_call", "call_id": f"c{i}", "name": "f", "arguments": "{}"}
        for i in range(2)
    ]
    job = _job(input=[{"role": "user", "content": "x"}, *calls])
    (turn,) = job.messages[1:]
    assert isinstance(turn, dict) and turn["content"] == ""
    assert [c["id"] for c in turn["tool_calls"]] == ["c0", "c1"]


def test_tool_choice_forces_a_call_with_a_grammar_or_offers_none() -> None:
    forced = _job(tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"})
    assert forced.fmt == call_schema([CHAT_WEATHER], "get_weather")
    assert _job(tools=[WEATHER], tool_choice="required").fmt == call_schema([CHAT_WEATHER])
    none = _job(tools=[WEATHER], tool_choice="none")
    assert none.tools == () and none.fmt is None and none.echo["tools"] == [WEATHER]
    assert "not among" in _refused(tools=[WEATHER], tool_choice={"type": "function", "name": "x"})
    assert "not both" in _refused(
        tools=[WEATHER],
        tool_choice="required",
        text={"format": {"type": "json_object"}},
    )


def test_text_format_is_olla_s_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    shaped = _job(text={"format": {"type": "json_schema", "name": "a", "schema": schema}})
    assert shaped.fmt == schema and shaped.echo["text"]["format"]["name"] == "a"
    assert _job(text={"format": {"type": "json_object"}}).fmt == "json"
    assert _job(text={"format": {"type": "text"}}).fmt is None
    assert "text.format.schema" in _refused(text={"format": {"type": "json_schema"}})
    assert "text.format.type" in _refused(text={"format": {"type": "xml"}})


def test_reasoning_effort_is_think_and_store_is_accepted_and_ignored() -> None:
    job = _job(reasoning={"effort": "high", "summary": "auto"}, store=True)
    assert job.think == "high" and job.echo["store"] is False
    assert job.echo["reasoning"] == {"effort": "high", "summary": "auto"}
    assert _job(reasoning={"effort": "none"}).think is False


@pytest.mark.parametrize("field", ["previous_response_id", "conversation"])
def test_server_side_state_is_a_400_that_says_to_send_the_whole_input(field: str) -> None:
    message = _refused(**{field: "resp_123"})
    assert field in message and "stateless" in message and '"input"' in message


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"tools": [{"type": "web_search"}]}, '"web_search"'),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"input": []}, '"input"'),
        ({"input": [{"type": "item_reference", "id": "x"}]}, '"item_reference"'),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "image_url"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input_file"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}]},
            "input[0].arguments",
        ),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"truncation": "sometimes"}, "truncation"),
    ],
)
def test_a_bad_field_is_a_400_that_names_it(body: dict[str, Any], named: str) -> None:
    assert named in _refused(**body)


def test_a_codex_shaped_body_is_taken() -> None:
    """What Codex CLI sends with a custom provider: developer and user parts, function tools
    with `strict`, `include`, `store: false`, `text` without a format."""
    part = {"type": "input_text", "text": "x"}
    job = _job(
        instructions="You are a coding agent.",
        input=[
            {"type": "message", "role": "developer", "content": [part]},
            {"type": "message", "role": "user", "content": [part]},
        ],
        tools=[{**WEATHER, "strict": False}],
        tool_choice="auto",
        parallel_tool_calls=False,
        store=False,
        stream=True,
        include=["reasoning.encrypted_content"],
        prompt_cache_key="abc",
        text={"verbosity": "low"},
    )
    assert [m.role for m in job.messages if isinstance(m, Message)] == ["system", "system", "user"]
    assert job.tools == (CHAT_WEATHER,) and job.fmt is None and job.stream
    assert job.echo["parallel_tool_calls"] is False and job.echo["text"] == {
        "format": {"type": "text"}
    }
