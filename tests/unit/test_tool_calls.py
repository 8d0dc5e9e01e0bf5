"""Tool calls in model output: the formats models write, and streaming that holds calls back."""

from __future__ import annotations

import pytest

from olla.errors import InvalidRequest
from olla.tool_calls import CallStream, call_schema, find_calls, parse_tools

NAMES = {"get_weather", "add"}


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '  {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
        '[{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]',
    ],
)
def test_each_format_models_write_is_a_call(text: str) -> None:
    content, calls = find_calls(text, NAMES)
    assert content == "" and [(c.name, c.arguments) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "launch_rockets", "arguments": {}}',
        '{"answer": 42}',
        "Paris is sunny.",
        "<tool_call>not json</tool_call>",
        "[1, 2]",
    ],
)
def test_what_is_not_a_call_of_an_offered_tool_stays_content(text: str) -> None:
    assert find_calls(text, NAMES) == (text, [])


def test_text_before_a_call_block_is_content_and_several_calls_keep_their_order() -> None:
    text = (
        'Let me check.\n<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    )
    content, calls = find_calls(text, NAMES)
    assert content == "Let me check." and [c.name for c in calls] == ["add", "get_weather"]
    assert calls[0].id != calls[1].id
    assert calls[1].openai()["function"]["arguments"] == '{"city": "Oslo"}'


def feed_all(stream: CallStream, pieces: list[str]) -> str:
    """The content of `pieces`; each call a block completes marked as `<name>`."""
    out = []
    for piece in pieces:
        content, calls = stream.feed(piece)
        out.append(content + "".join(f"<{call.name}>" for call in calls))
    return "".join(out)


def test_a_stream_streams_content_and_holds_back_calls() -> None:
    plain = CallStream(NAMES)
    assert feed_all(plain, ["The ", "weather ", "is ", "<tool", "ish"]) == "The weather is <toolish"
    assert plain.finish() == ("", [])

    mixed = CallStream(NAMES)
    pieces = [
        "Checking",
        " now <tool",
        '_call>{"name": "add", ',
        '"arguments": {"a": 2}}',
        "</tool_call>",
    ]
    assert feed_all(mixed, pieces) == "Checking now <add>"  # given out as the block closes
    assert mixed.finish() == ("", [])

    two = CallStream(NAMES)
    block = '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>'
    assert feed_all(two, [block[:30], block[30:] + "\n" + block[:5], block[5:], " Done"]) == (
        "<add><add>Done"
    )

    bare = CallStream(NAMES)
    assert feed_all(bare, ["  ", '{"name": "add",', ' "arguments": {}}']) == ""
    assert [c.name for c in bare.finish()[1]] == ["add"]

    not_a_call = CallStream(NAMES)
    assert feed_all(not_a_call, ["{", '"answer": 1}']) == ""
    assert not_a_call.finish() == ('{"answer": 1}', [])


def test_a_forced_call_schema_names_only_offered_tools() -> None:
    tools = parse_tools(
        [
            {
                "type": "function",
                "function": {
                    "name": "add",
                    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
                },
            },
            {"type": "function", "function": {"name": "get_weather"}},
        ]
    )
    one = call_schema(tools, "add")
    assert one["properties"]["name"] == {"const": "add"}
    assert one["properties"]["arguments"]["properties"]["a"] == {"type": "integer"}
    assert len(call_schema(tools)["anyOf"]) == 2
    with pytest.raises(InvalidRequest, match="'nope', which is not among"):
        call_schema(tools, "nope")


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ({"type": "function"}, 'field "tools" must be a list'),
        ([{"type": "retrieval"}], "tools[0] must be"),
        ([{"type": "function", "function": {"description": "x"}}], "tools[0].function.name"),
        ([{"function": {"name": "f", "parameters": []}}], "tools[0].function.parameters"),
    ],
)
def test_malformed_tools_name_the_field(tools: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_tools(tools)
