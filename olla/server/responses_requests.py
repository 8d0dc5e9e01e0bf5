"""OpenAI's Responses request body (/v1/responses) checked and turned into what olla asks of a
model; every error names its field.

olla keeps no responses (as Ollama): a request carries its whole conversation in `input`, and
what would need a stored response (`previous_response_id`, `conversation`, `background`) is a
400 that says so. `store` is accepted and ignored, as Ollama ignores it; the answer says
`"store": false`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from olla.api import get_bool, get_int
from olla.errors import InvalidRequest
from olla.registry.names import ModelName
from olla.server.openai_requests import completion
from olla.server.responses_input import conversation
from olla.templates import ChatMessage
from olla.tool_calls import call_schema, parse_tools

# fields whose meaning needs a response kept on the server, and what to send instead
_STATEFUL = {
    "previous_response_id": 'send the whole conversation in "input" instead',
    "conversation": 'send the whole conversation in "input" instead',
    "background": "ask without it and wait for the answer (or stream it)",
}


@dataclass(frozen=True)
class ResponsesJob:
    """A Responses request once parsed: what the gate needs, and what the answer repeats."""

    name: ModelName
    messages: tuple[ChatMessage, ...]
    tools: tuple[dict[str, Any], ...]  # offered to the template (chat's shape), parsed for calls
    options: dict[str, Any]
    fmt: str | dict[str, Any] | None
    think: bool | str | None
    stream: bool
    truncate: bool
    id: str
    created_at: int
    echo: dict[str, Any]  # the request's settings as a Response object repeats them


def parse_responses(body: Mapping[str, Any]) -> ResponsesJob:
    """Validate a /v1/responses body; every error names its field."""
    for key, instead in _STATEFUL.items():
        if body.get(key):
            raise InvalidRequest(
                f'field "{key}": olla keeps no responses or conversations (it is stateless); '
                f"{instead}"
            )
    # temperature, top_p, the model and reasoning.effort checked as /v1/chat/completions does
    shared = {k: body[k] for k in ("model", "temperature", "top_p", "reasoning") if k in body}
    job = completion(shared, "response", "resp")
    if (limit := get_int(body, "max_output_tokens", 1)) is not None:
        job.options["num_predict"] = limit
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest('field "instructions" must be a string')
    text_format, fmt = _text_format(body.get("text"))
    tools = [_tool(tool, i) for i, tool in enumerate(_list(body.get("tools"), "tools"))]
    offered, fmt = _tool_choice(body.get("tool_choice"), parse_tools(tools), fmt)
    truncate = _truncation(body.get("truncation"))
    return ResponsesJob(
        name=job.name,
        messages=tuple(conversation(body.get("input"), instructions)),
        tools=tuple(offered),
        options=job.options,
        fmt=fmt,
        think=job.think,
        stream=get_bool(body, "stream", False),
        truncate=truncate,
        id=f"resp_{secrets.token_hex(12)}",
        created_at=int(time.time()),
        echo=_echo(body, text_format, "auto" if truncate else "disabled"),
    )


def _list(value: Any, key: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f'field "{key}" must be a list')
    return value


def _tool(tool: Any, i: int) -> dict[str, Any]:
    """A Responses function tool (`{"type": "function", "name", "description", "parameters"}`)
    in chat's shape, which templates and the call parser read."""
    kind = tool.get("type") if isinstance(tool, dict) else None
    if not isinstance(tool, dict) or kind != "function":
        raise InvalidRequest(
            f"tools[{i}]: olla runs function tools only "
            f'({{"type": "function", "name": ...}}), not {json.dumps(kind)}: OpenAI\'s built-in '
            "tools (web search, file search, code interpreter, ...) run on OpenAI's servers"
        )
    if isinstance(tool.get("function"), dict):  # chat's shape, sent here by mistake: take it
        return {"type": "function", "function": tool["function"]}
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise InvalidRequest(f"tools[{i}].name must be a non-empty string")
    function = {k: tool[k] for k in ("name", "description", "parameters") if tool.get(k)}
    return {"type": "function", "function": function}


def _tool_choice(
    choice: Any, tools: list[dict[str, Any]], fmt: str | dict[str, Any] | None
) -> tuple[list[dict[str, Any]], str | dict[str, Any] | None]:
    """The tools to offer and the format: "none" offers none; "required" or a named function
    forces a call through a grammar, as /v1/chat/completions does."""
    if choice in (None, "auto"):
        return tools, fmt
    if choice == "none":
        return [], fmt
    name = None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if not isinstance(name, str):
            raise InvalidRequest('field "tool_choice.name" must name one of "tools"')
    elif choice != "required":
        raise InvalidRequest(
            'field "tool_choice" must be "auto", "none", "required" or '
            '{"type": "function", "name": ...} (olla has no built-in tools)'
        )
    if not tools:
        raise InvalidRequest('field "tool_choice" asks for a call, but "tools" is empty')
    if fmt is not None:
        raise InvalidRequest('send "text.format" or a forced "tool_choice", not both')
    return tools, call_schema(tools, name)


def _text_format(text: Any) -> tuple[dict[str, Any], str | dict[str, Any] | None]:
    """`text.format` as the answer repeats it, and as Ollama's `format`: "json", a schema or
    nothing."""
    if text is None:
        return {"type": "text"}, None
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(text, dict) or (fmt is not None and not isinstance(fmt, dict)):
        raise InvalidRequest('field "text" must be an object: {"format": {"type": "text"}}')
    kind = (fmt or {}).get("type", "text")
    if kind == "text":
        return {"type": "text"}, None
    if kind == "json_object":
        return {"type": "json_object"}, "json"
    if kind == "json_schema":
        schema = fmt.get("schema") if fmt is not None else None
        if not isinstance(schema, dict):
            raise InvalidRequest('field "text.format.schema" must be a JSON schema object')
        return dict(fmt or {}), schema
    raise InvalidRequest('field "text.format.type" must be "text", "json_object" or "json_schema"')


def _truncation(value: Any) -> bool:
    """OpenAI's `truncation`: "auto" drops the oldest input to fit, "disabled" refuses a prompt
    too long (a 400); unset, olla's way on every route: drop."""
    if value is None or value == "auto":
        return True
    if value == "disabled":
        return False
    raise InvalidRequest('field "truncation" must be "auto" or "disabled"')


def _echo(body: Mapping[str, Any], text_format: dict[str, Any], truncation: str) -> dict[str, Any]:
    """The settings a Response object repeats from its request (the SDK's types want them)."""
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRequest('field "metadata" must be an object of strings')
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest('field "user" must be a string')
    reasoning = body.get("reasoning") or {}
    return {
        "instructions": body.get("instructions"),
        "tools": list(body.get("tools") or []),
        "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": get_bool(body, "parallel_tool_calls", True),
        "text": {"format": text_format},
        "temperature": body.get("temperature"),  # None: the model's own
        "top_p": body.get("top_p"),
        "max_output_tokens": body.get("max_output_tokens"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "truncation": truncation,
        "metadata": metadata or {},
        "user": user,
        "previous_response_id": None,
        "store": False,  # olla keeps nothing, whatever was asked (as Ollama)
        "background": False,
        "service_tier": "default",
    }
