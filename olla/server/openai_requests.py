"""OpenAI's request bodies (/v1/chat/completions, /v1/completions) checked and turned into what
olla asks of a model; every error names its field."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from olla.api import MESSAGE_ROLES, get_bool, get_int, get_model_name, logprobs_of, tool_call_of
from olla.chat import Message
from olla.errors import InvalidRequest, NotSupported
from olla.images import PLACEHOLDER, Image, data_url_image, with_images
from olla.registry.names import ModelName
from olla.templates import ChatMessage
from olla.tool_calls import call_schema, parse_tools


@dataclass
class Completion:
    """What both completion routes share once the body is parsed."""

    name: ModelName
    options: dict[str, Any]
    stream: bool
    include_usage: bool
    fmt: str | dict[str, Any] | None
    kind: str  # "chat.completion" or "text_completion"
    id: str
    created: int
    tools: list[dict[str, Any]] = field(default_factory=list)  # offered, and parsed for calls
    logprobs: int | None = None  # alternatives per token to report; None: off
    think: bool | str | None = None  # from reasoning_effort; None: the model's way


def _number(body: Mapping[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise InvalidRequest(f'field "{key}" must be a number from {lo:g} to {hi:g}')
    return float(value)


def _stop(body: Mapping[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise InvalidRequest('field "stop" must be a non-empty string or a list of them')
    return stop


def _response_format(body: Mapping[str, Any]) -> str | dict[str, Any] | None:
    """`response_format` as Ollama's `format`: "json", a JSON schema, or nothing."""
    value = body.get("response_format")
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest('field "response_format.json_schema.schema" must be an object')
        return schema
    raise InvalidRequest(
        'field "response_format.type" must be "text", "json_object" or "json_schema"'
    )


def completion(body: Mapping[str, Any], kind: str, prefix: str) -> Completion:
    """Validate what chat and text completions share; every error names its field."""
    if (n := get_int(body, "n", 1)) is not None and n != 1:
        raise InvalidRequest('field "n": olla generates one choice per request; send n = 1')
    for unsupported in ("functions", "logit_bias"):
        if body.get(unsupported):
            raise NotSupported(f'field "{unsupported}" is not supported by this version of olla')
    options: dict[str, Any] = {}
    for key, lo, hi in (
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("presence_penalty", -2, 2),
        ("frequency_penalty", -2, 2),
    ):
        if (number := _number(body, key, lo, hi)) is not None:
            options[key] = number
    if (seed := get_int(body, "seed", -(2**63))) is not None:
        options["seed"] = seed
    limit = get_int(body, "max_completion_tokens", 1)
    limit = limit if limit is not None else get_int(body, "max_tokens", 1)
    if limit is not None:
        options["num_predict"] = limit
    if (stop := _stop(body)) is not None:
        options["stop"] = stop
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise InvalidRequest('field "stream_options" must be an object')
    if kind == "chat.completion":
        logprobs = logprobs_of(body, "logprobs", "top_logprobs")
    else:  # the legacy completions take "logprobs": n (0 to 5)
        n_best = get_int(body, "logprobs", 0, 5)
        logprobs = n_best
    return Completion(
        think=_think(body),
        logprobs=logprobs,
        name=get_model_name(body),
        options=options,
        stream=get_bool(body, "stream", False),
        include_usage=get_bool(stream_options or {}, "include_usage", False),
        fmt=_response_format(body),
        kind=kind,
        id=f"{prefix}-{secrets.token_hex(12)}",
        created=int(time.time()),
    )


# OpenAI's efforts as Ollama's think: its scale goes past Ollama's at both ends (Ollama clamps)
_EFFORTS: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "high",
    "xhigh": "high",
    "ultra": "high",
}


def _think(body: Mapping[str, Any]) -> bool | str | None:
    """`reasoning: {effort}`, else `reasoning_effort`, as Ollama's `think`; None: not asked."""
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise InvalidRequest('field "reasoning" must be an object: {"effort": "low"}')
    where = "reasoning.effort" if reasoning is not None else "reasoning_effort"
    effort = reasoning.get("effort") if reasoning is not None else body.get("reasoning_effort")
    if effort is None or effort == "":
        return None
    if effort not in _EFFORTS:
        raise InvalidRequest(
            f'field "{where}" must be one of {", ".join(_EFFORTS)}, not {json.dumps(effort)}'
        )
    return _EFFORTS[str(effort)]


def messages(raw: Any) -> list[ChatMessage]:
    """OpenAI messages: content as a string or a list of text and `image_url` parts (data URIs;
    each image an `[img]` where its part was); `developer` is system; an assistant's
    `tool_calls` and a tool's `tool_call_id` kept for the template."""
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest('field "messages" must be a non-empty list of messages')
    out: list[ChatMessage] = []
    names: dict[str, str] = {}  # tool call id -> function name, for the tool messages after it
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidRequest(f"messages[{i}] must be an object with role and content")
        role = "system" if item.get("role") == "developer" else item.get("role")
        if role not in MESSAGE_ROLES:
            raise InvalidRequest(
                f"messages[{i}].role must be one of system, developer, user, assistant, tool"
            )
        content, images = _content(item.get("content"), f"messages[{i}].content")
        calls = item.get("tool_calls")
        thinking = _reasoning_of(item, f"messages[{i}]") if role == "assistant" else ""
        if role == "assistant" and (calls or thinking):
            message: dict[str, Any] = {"role": role, "content": content}
            if thinking:
                message["thinking"] = thinking  # the template decides whether to show it
            if calls:
                if not isinstance(calls, list):
                    raise InvalidRequest(f"messages[{i}].tool_calls must be a list")
                parsed = [
                    tool_call_of(c, f"messages[{i}].tool_calls[{j}]") for j, c in enumerate(calls)
                ]
                names.update({c["id"]: c["function"]["name"] for c in parsed if "id" in c})
                message["tool_calls"] = parsed
            out.append(with_images(message, images))
        elif role == "tool":
            call_id = item.get("tool_call_id")
            name = item.get("name") or names.get(call_id if isinstance(call_id, str) else "")
            answer = {
                "role": role,
                "content": content,
                "tool_call_id": call_id,
                "tool_name": name,
                "name": name,
            }
            out.append(with_images(answer, images))
        else:
            out.append(with_images(Message(role, content), images))
    return out


def _reasoning_of(item: Mapping[str, Any], where: str) -> str:
    """An assistant message's reasoning: Ollama's `reasoning`, or `reasoning_content`."""
    for key in ("reasoning", "reasoning_content"):
        value = item.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"{where}.{key} must be a string")
        if value:
            return value
    return ""


def tool_choice(body: Mapping[str, Any], job: Completion) -> None:
    """Offer `tools`; tool_choice "none" offers none, "required" or a named function forces a
    call through a grammar."""
    tools = parse_tools(body.get("tools"))
    choice = body.get("tool_choice", "auto")
    if choice in (None, "auto"):
        job.tools = tools
        return
    if choice == "none":
        return
    name = None
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise InvalidRequest(
                'field "tool_choice" must be "auto", "none", "required" or '
                '{"type": "function", "function": {"name": ...}}'
            )
    elif choice != "required":
        raise InvalidRequest('field "tool_choice" must be "auto", "none", "required" or a function')
    if not tools:
        raise InvalidRequest('field "tool_choice" asks for a call, but "tools" is empty')
    if job.fmt is not None:
        raise InvalidRequest('send "response_format" or a forced "tool_choice", not both')
    job.tools, job.fmt = tools, call_schema(tools, name)


def _content(content: Any, where: str) -> tuple[str, list[Image]]:
    """A message's text, with an `[img]` where each image part was, and its images."""
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise InvalidRequest(f"{where} must be a string or a list of content parts")
    texts, images = [], []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            images.append(_image_url(part.get("image_url"), f"{where}[{j}].image_url"))
            texts.append(PLACEHOLDER)
        elif kind in ("input_audio", "file"):
            raise InvalidRequest(f"{where}[{j}]: olla's models read text and images, not {kind}")
        else:
            raise InvalidRequest(
                f'{where}[{j}] must be {{"type": "text", "text": "..."}} or '
                '{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}'
            )
    return "".join(texts), images


def _image_url(value: Any, where: str) -> Image:
    """`image_url`: `{"url": ...}` (its `detail` changes nothing here), or the URL itself (as
    Ollama takes it)."""
    if isinstance(value, dict):
        return data_url_image(value.get("url"), f"{where}.url")
    return data_url_image(value, where)
