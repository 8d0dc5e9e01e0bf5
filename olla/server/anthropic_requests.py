"""Anthropic's Messages request bodies (/v1/messages, /v1/messages/count_tokens) checked and
turned into what olla asks of a model; every error names its field.

The conversation maps onto olla's chat messages as Ollama maps it: `system` (a string or text
blocks) is a system message; a user's `tool_result` blocks are `tool` messages (with the call's
id and its function's name) before the user's text; an assistant's `thinking`, `text` and
`tool_use` blocks are one assistant message with `thinking` and `tool_calls`. A user's `image`
blocks (base64 sources) are the message's images, each an `[img]` where its block was; a tool
result's images are its tool message's.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from olla.api import get_bool, get_int, get_model_name
from olla.errors import InvalidRequest
from olla.images import PLACEHOLDER, Image, image_of, with_images
from olla.registry.names import ModelName
from olla.templates import ChatMessage
from olla.tool_calls import call_schema, parse_tools

_ROLES = ("user", "assistant")
_NO_DOCUMENTS = "olla reads no document blocks; send the document's text"
_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")  # Anthropic's
# blocks that carry nothing a local model reads: Anthropic's encrypted reasoning, and results
# of its server tools, which olla does not run
_SKIPPED = frozenset(
    {"redacted_thinking", "server_tool_use", "web_search_tool_result", "web_fetch_tool_result"}
)


@dataclass
class MessagesJob:
    """A Messages body once parsed: the model, the chat, and how to answer."""

    name: ModelName
    messages: list[ChatMessage]
    options: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)  # offered, and parsed for calls
    fmt: dict[str, Any] | None = None  # output_config.format, or a forced call's grammar
    think: bool | str | None = None  # None: the model's way
    id: str = field(default_factory=lambda: f"msg_{secrets.token_hex(12)}")
    ignored: list[str] = field(default_factory=list)  # what was left out, for the log line


def messages_request(body: Mapping[str, Any], counting: bool = False) -> MessagesJob:
    """A /v1/messages body (`counting`: a count_tokens body, which has no max_tokens)."""
    job = MessagesJob(get_model_name(body), [])
    if not counting:
        limit = get_int(body, "max_tokens", 1)
        if limit is None:
            raise InvalidRequest(
                'missing field "max_tokens": the most tokens to generate, e.g. 1024'
            )
        job.options["num_predict"] = limit
        job.options.update(_sampling(body))
        job.stream = get_bool(body, "stream", False)
    system = _system(body.get("system"))
    job.messages = ([{"role": "system", "content": system}] if system else []) + _chat(
        body.get("messages"), job.ignored
    )
    job.think = _think(body)
    job.fmt = _output_format(body)
    _tools(body, job)
    if job.fmt is not None and job.think:
        # the grammar constrains the answer from its first token: no room to reason first
        # (Anthropic refuses thinking with a forced tool; Claude Code sends both at times)
        job.think = None
    return job


def _sampling(body: Mapping[str, Any]) -> dict[str, Any]:
    """temperature, top_p, top_k and stop_sequences as Ollama's options."""
    options: dict[str, Any] = {}
    for key in ("temperature", "top_p"):  # both from 0 to 1 in Anthropic's API
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise InvalidRequest(f'field "{key}" must be a number from 0 to 1')
        options[key] = float(value)
    if (top_k := get_int(body, "top_k", 0)) is not None:
        options["top_k"] = top_k
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise InvalidRequest('field "stop_sequences" must be a list of non-empty strings')
        if stops:
            options["stop"] = stops
    return options


def _system(raw: Any) -> str:
    """`system`: a string, or a list of text blocks (their texts joined)."""
    if raw is None or isinstance(raw, str):
        return raw or ""
    if not isinstance(raw, list):
        raise InvalidRequest('field "system" must be a string or a list of text blocks')
    return "".join(_text(block, f"system[{i}]") for i, block in enumerate(raw))


def _text(block: Any, where: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text":
        raise InvalidRequest(f'{where} must be {{"type": "text", "text": "..."}}')
    text = block.get("text")
    if not isinstance(text, str):
        raise InvalidRequest(f"{where}.text must be a string")
    return text


def _chat(raw: Any, ignored: list[str]) -> list[ChatMessage]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest('field "messages" must be a non-empty list of messages')
    out: list[ChatMessage] = []
    names: dict[str, str] = {}  # tool_use id -> the tool's name, for the results after it
    for i, item in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(item, dict) or item.get("role") not in _ROLES:
            raise InvalidRequest(f'{where} must be an object with "role" (user or assistant)')
        blocks = _blocks(item.get("content"), f"{where}.content")
        if item["role"] == "assistant":
            out.extend(_assistant(blocks, where, names, ignored))
        else:
            out.extend(_user(blocks, where, names, ignored))
    return out


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise InvalidRequest(f"{where} must be a string or a list of content blocks")
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidRequest(f'{where}[{j}] must be a content block with a "type"')
    return content


def _assistant(
    blocks: list[dict[str, Any]], where: str, names: dict[str, str], ignored: list[str]
) -> list[ChatMessage]:
    texts, thinking, calls = [], [], []
    for j, block in enumerate(blocks):
        at, kind = f"{where}.content[{j}]", block["type"]
        if kind == "text":
            texts.append(_text(block, at))
        elif kind == "thinking":
            value = block.get("thinking")
            if not isinstance(value, str):
                raise InvalidRequest(f"{at}.thinking must be a string")
            thinking.append(value)
        elif kind == "tool_use":
            call = _tool_use(block, at)
            names[call["id"]] = call["function"]["name"]
            calls.append(call)
        else:
            _other(kind, at, ignored)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if thinking:
        message["thinking"] = "".join(thinking)  # the template decides whether to show it
    if calls:
        message["tool_calls"] = calls
    return [message]


def _tool_use(block: dict[str, Any], at: str) -> dict[str, Any]:
    """A tool_use block as templates expect a call: `{"id", "function": {name, arguments}}`."""
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{at}.id must be a non-empty string")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{at}.name must be a non-empty string")
    if not isinstance(arguments, dict):
        raise InvalidRequest(f"{at}.input must be an object")
    function = {"name": name, "arguments": arguments}
    return {"type": "function", "id": call_id, "function": function}


def _user(
    blocks: list[dict[str, Any]], where: str, names: dict[str, str], ignored: list[str]
) -> list[ChatMessage]:
    results: list[ChatMessage] = []
    texts, images = [], []
    for j, block in enumerate(blocks):
        at, kind = f"{where}.content[{j}]", block["type"]
        if kind == "text":
            texts.append(_text(block, at))
        elif kind == "image":
            images.append(_image(block, at))
            texts.append(PLACEHOLDER)
        elif kind == "tool_result":
            results.append(_tool_result(block, at, names))
        else:
            _other(kind, at, ignored)
    # the results answer the calls just before them, so they come first (as Ollama)
    if texts or not results:
        results.append(with_images({"role": "user", "content": "".join(texts)}, images))
    return results


def _image(block: dict[str, Any], at: str) -> Image:
    """An image block: its `source` base64 data (a URL or a file id is a 400: olla fetches
    nothing and keeps no files)."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind in ("url", "file"):
        raise InvalidRequest(
            f"{at}.source: olla takes images as base64 only, not by {kind}; send "
            '{"type": "base64", "media_type": "image/png", "data": "..."}'
        )
    if not isinstance(source, dict) or kind != "base64":
        raise InvalidRequest(
            f'{at}.source must be {{"type": "base64", "media_type": "image/png", "data": "..."}}'
        )
    media_type = source.get("media_type")
    if media_type is not None and media_type not in _MEDIA_TYPES:
        raise InvalidRequest(f"{at}.source.media_type must be one of {', '.join(_MEDIA_TYPES)}")
    return image_of(source.get("data"), f"{at}.source.data")


def _tool_result(block: dict[str, Any], at: str, names: dict[str, str]) -> ChatMessage:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{at}.tool_use_id must be the id of the tool_use it answers")
    content, images = block.get("content"), []
    if isinstance(content, list):
        parts = []
        for k, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image":
                images.append(_image(part, f"{at}.content[{k}]"))
                parts.append(PLACEHOLDER)
                continue
            if kind == "document":
                raise InvalidRequest(f"{at}.content[{k}]: {_NO_DOCUMENTS}")
            parts.append(_text(part, f"{at}.content[{k}]"))
        content = "".join(parts)
    elif content is not None and not isinstance(content, str):
        raise InvalidRequest(f"{at}.content must be a string or a list of text blocks")
    name = names.get(call_id, "")
    result = {
        "role": "tool",
        "content": content or "",
        "tool_call_id": call_id,
        "tool_name": name,
        "name": name,
    }
    return with_images(result, images)


def _other(kind: str, at: str, ignored: list[str]) -> None:
    """A block that is neither text, thinking nor a tool's: a 400 for what the model would
    need to see; left out (and named in the log line) for what no local model reads."""
    if kind == "document":
        raise InvalidRequest(f"{at}: {_NO_DOCUMENTS}")
    if kind == "image":  # a user's images are taken; an assistant's are not Anthropic's
        raise InvalidRequest(f"{at}: images go in user messages (or tool results)")
    ignored.append(f"{at} ({kind})" if kind not in _SKIPPED else f"{kind} block")


def _think(body: Mapping[str, Any]) -> bool | str | None:
    """`thinking` as Ollama's think: "disabled" off, the others ("enabled" with its
    budget_tokens, "adaptive", "between_tools") on; without it, `output_config.effort` as a
    level (as Ollama reads it)."""
    thinking = body.get("thinking")
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if kind not in ("enabled", "disabled", "adaptive", "between_tools"):
            raise InvalidRequest(
                'field "thinking" must be {"type": "enabled", "budget_tokens": N} or '
                '{"type": "disabled"}'
            )
        if kind == "enabled":
            get_int(thinking, "budget_tokens", 1)  # olla has no budget; a bad one is still a 400
        return kind != "disabled"
    config = _output_config(body)
    effort = config.get("effort")
    if isinstance(effort, str) and effort.lower() in ("low", "medium", "high", "max", "xhigh"):
        return "high" if effort.lower() in ("max", "xhigh") else effort.lower()
    return None


def _output_config(body: Mapping[str, Any]) -> dict[str, Any]:
    config = body.get("output_config")
    if config is not None and not isinstance(config, dict):
        raise InvalidRequest('field "output_config" must be an object')
    return config or {}


def _output_format(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """`output_config.format` (`{"type": "json_schema", "schema"}`): a grammar, as `format`."""
    fmt = _output_config(body).get("format")
    if fmt is None:
        return None
    schema = fmt.get("schema") if isinstance(fmt, dict) else None
    if (
        not isinstance(fmt, dict)
        or fmt.get("type") != "json_schema"
        or not isinstance(schema, dict)
    ):
        raise InvalidRequest(
            'field "output_config.format" must be {"type": "json_schema", "schema": {...}}'
        )
    return schema


def _tools(body: Mapping[str, Any], job: MessagesJob) -> None:
    """`tools` offered as functions, and `tool_choice`: "auto" offers them, "none" offers none,
    "any" or a named "tool" forces a call through a grammar (as /v1 does for "required")."""
    tools = _functions(body.get("tools"), job.ignored)
    choice = body.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise InvalidRequest(
            'field "tool_choice" must be {"type": "auto"}, {"type": "any"}, '
            '{"type": "tool", "name": ...} or {"type": "none"}'
        )
    if kind == "none":
        return
    job.tools = tools
    if kind == "auto":
        return
    name = choice.get("name")
    if kind == "tool" and not isinstance(name, str):
        raise InvalidRequest('field "tool_choice.name" must name one of "tools"')
    if not tools:
        raise InvalidRequest('field "tool_choice" asks for a tool call, but "tools" is empty')
    if job.fmt is not None:
        raise InvalidRequest('send "output_config.format" or a forced "tool_choice", not both')
    job.fmt = call_schema(tools, name if kind == "tool" else None)


def _functions(raw: Any, ignored: list[str]) -> list[dict[str, Any]]:
    """Anthropic's tools (`name`, `description`, `input_schema`) as functions; its server
    tools (web search, code execution...) run on Anthropic's side, so they are left out."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequest('field "tools" must be a list of {"name", "input_schema"} objects')
    functions = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise InvalidRequest(f'tools[{i}] must be an object with "name" and "input_schema"')
        if tool.get("type", "custom") != "custom":
            ignored.append(f"tool {tool.get('name', i)} ({tool.get('type')})")
            continue
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"tools[{i}].name must be a non-empty string")
        if not isinstance(schema, dict):
            raise InvalidRequest(f"tools[{i}].input_schema must be a JSON schema object")
        function = {"name": name, "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        functions.append({"type": "function", "function": function})
    return parse_tools(functions)
