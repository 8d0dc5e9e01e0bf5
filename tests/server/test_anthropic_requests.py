"""Anthropic's Messages bodies as olla's chat: messages, tools, tool_choice and thinking, and a
400 naming the field for what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from olla.errors import InvalidRequest
from olla.server.anthropic_requests import messages_request

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {"name": "weather", "description": "The weather", "input_schema": SCHEMA}
HI = [{"role": "user", "content": "Hi"}]


def _body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 8, "messages": HI, **fields}


def test_the_sampling_fields_become_options() -> None:
    job = messages_request(
        _body(temperature=0, top_p=0.5, top_k=3, stop_sequences=["X"], stream=True)
    )
    assert job.options == {"num_predict": 8, "temperature": 0.0, "top_p": 0.5, "top_k": 3,
                           "stop": ["X"]}  # fmt: skip
    assert job.stream and job.id.startswith("msg_") and job.tools == [] and job.fmt is None


def test_a_conversation_with_a_tool_round_trip_maps_onto_chat_messages() -> None:
    job = messages_request(
        _body(
            system=[{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
            tools=[WEATHER],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Ask the tool.", "signature": "s"},
                        {"type": "text", "text": "Looking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "weather",
                            "input": {"city": "Oslo"},
                        },  # fmt: skip
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "18 C"}],
                        },  # fmt: skip
                        {"type": "text", "text": "And tomorrow?"},
                    ],
                },
            ],
        )
    )
    assert job.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": "Looking.",
            "thinking": "Ask the tool.",
            "tool_calls": [
                {
                    "type": "function",
                    "id": "toolu_1",
                    "function": {"name": "weather", "arguments": {"city": "Oslo"}},
                }
            ],
        },
        {
            "role": "tool",
            "content": "18 C",
            "tool_call_id": "toolu_1",
            "tool_name": "weather",
            "name": "weather",
        },
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert job.tools == [
        {
            "type": "function",
            "function": {"name": "weather", "parameters": SCHEMA, "description": "The weather"},
        }
    ]
    assert job.fmt is None  # tool_choice auto: offered, not forced


def test_tool_choice_forces_a_call_or_offers_none() -> None:
    forced = messages_request(
        _body(tools=[WEATHER], tool_choice={"type": "tool", "name": "weather"})
    )
    assert forced.fmt is not None and forced.fmt["properties"]["name"] == {"const": "weather"}
    assert messages_request(_body(tools=[WEATHER], tool_choice={"type": "any"})).fmt is not None
    none = messages_request(_body(tools=[WEATHER], tool_choice={"type": "none"}))
    assert none.tools == [] and none.fmt is None
    with pytest.raises(InvalidRequest, match="not among"):
        messages_request(_body(tools=[WEATHER], tool_choice={"type": "tool", "name": "other"}))
    with pytest.raises(InvalidRequest, match='"tools" is empty'):
        messages_request(_body(tool_choice={"type": "any"}))


def test_thinking_maps_onto_think() -> None:
    enabled = {"type": "enabled", "budget_tokens": 1024}
    assert messages_request(_body(thinking=enabled)).think is True
    assert messages_request(_body(thinking={"type": "disabled"})).think is False
    assert messages_request(_body()).think is None
    assert messages_request(_body(output_config={"effort": "max"})).think == "high"


def test_output_format_is_a_grammar_and_leaves_no_room_to_think() -> None:
    shaped = {"format": {"type": "json_schema", "schema": SCHEMA}}
    job = messages_request(_body(output_config=shaped, thinking={"type": "adaptive"}))
    assert job.fmt == SCHEMA and job.think is None  # a grammar from the first token
    forced = {"type": "tool", "name": "weather"}
    job = messages_request(
        _body(tools=[WEATHER], tool_choice=forced, thinking={"type": "adaptive"})
    )
    assert job.fmt is not None and job.think is None
    with pytest.raises(InvalidRequest, match="not both"):
        messages_request(_body(tools=[WEATHER], tool_choice=forced, output_config=shaped))
    with pytest.raises(InvalidRequest, match="output_config.format"):
        messages_request(_body(output_config={"format": {"type": "json_object"}}))


def test_server_tools_and_unreadable_blocks_are_left_out_and_named() -> None:
    search = {"type": "web_search_20250305", "name": "web_search"}
    job = messages_request(
        _body(
            tools=[WEATHER, search],
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Hi"}, {"type": "citations_thing"}],
                }
            ],  # fmt: skip
        )
    )
    assert [t["function"]["name"] for t in job.tools] == ["weather"]
    assert job.ignored == [
        "messages[0].content[1] (citations_thing)",
        "tool web_search (web_search_20250305)",
    ]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0]"),
        ({"temperature": 1.5}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"stop_sequences": "X"}, "stop_sequences"),
        ({"system": 3}, "system"),
        ({"thinking": {"type": "maybe"}}, "thinking"),
        ({"tools": [{"name": "x"}]}, "tools[0].input_schema"),
        ({"tool_choice": {"type": "required"}}, "tool_choice"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            'messages[0].content[0].source must be {"type": "base64"',
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
            "tool_use_id",
        ),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "a"}]}]},
            "messages[0].content[0].name",
        ),
    ],
)
def test_bad_bodies_name_the_field(fields: dict[str, Any], named: str) -> None:
    body = {k: v for k, v in _body(**fields).items() if v is not None}
    with pytest.raises(InvalidRequest, match=named.replace("[", r"\[").replace("]", r"\]")):
        messages_request(body)


def test_count_tokens_needs_no_max_tokens() -> None:
    job = messages_request({"model": "m", "messages": HI}, counting=True)
    assert job.options == {} and job.messages == [{"role": "user", "content": "Hi"}]
