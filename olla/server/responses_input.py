"""A Responses request's `input` (a string, or a list of items) as the chat messages a template
reads; every error names the item.

Items: messages (user, assistant, system, developer; content a string, or text parts and
`input_image` parts with a data URI, each image an `[img]` where its part was), an
assistant's `function_call`s (joined to the assistant turn they belong to), a tool's
`function_call_output`, and `reasoning` given back (the thinking of the assistant turn after it).
"""

from __future__ import annotations

import json
from typing import Any

from olla.chat import Message
from olla.errors import InvalidRequest
from olla.images import PLACEHOLDER, Image, data_url_image, with_images
from olla.templates import ChatMessage

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS = ("input_text", "output_text", "text")
_MEDIA_PARTS = ("input_file", "input_audio")


def conversation(raw: Any, instructions: str | None) -> list[ChatMessage]:
    """The messages for `input`, after `instructions` as a system message."""
    out: list[ChatMessage] = [Message("system", instructions)] if instructions else []
    if isinstance(raw, str):
        return [*out, Message("user", raw)]
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest('field "input" must be a string or a non-empty list of items')
    names: dict[str, str] = {}  # call id -> function name, for the outputs after it
    thinking = ""  # reasoning given back: the next assistant turn's
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object with a type")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "reasoning":
            thinking += _reasoning(item, where)
        elif kind == "message":
            out.append(_message(item, where, thinking))
            thinking = "" if _role(out[-1]) == "assistant" else thinking
        elif kind == "function_call":
            call = _call(item, where)
            names[call["id"]] = call["function"]["name"]
            _add_call(out, call, thinking)
            thinking = ""
        elif kind == "function_call_output":
            out.append(_output(item, where, names))
        else:
            raise InvalidRequest(
                f"{where}.type must be message, function_call, function_call_output or "
                f"reasoning, not {json.dumps(kind)} (olla keeps no items to refer to and has "
                "no built-in tools)"
            )
    # reasoning with no assistant turn after it has nothing to belong to: dropped
    return out


def _message(item: dict[str, Any], where: str, thinking: str) -> ChatMessage:
    role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise InvalidRequest(f"{where}.role must be one of user, assistant, system, developer")
    content, images = _content(item.get("content"), f"{where}.content")
    if role == "assistant" and thinking:
        return with_images({"role": role, "content": content, "thinking": thinking}, images)
    return with_images(Message(role, content), images)


def _content(content: Any, where: str) -> tuple[str, list[Image]]:
    """A string, or a list of text parts (`input_text`, `output_text`) joined, with an `[img]`
    where each `input_image` part was; and the images."""
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise InvalidRequest(f"{where} must be a string or a list of content parts")
    texts, images = [], []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind == "input_image":
            images.append(_input_image(part, f"{where}[{j}]"))
            texts.append(PLACEHOLDER)
        elif kind in _MEDIA_PARTS:
            raise InvalidRequest(f"{where}[{j}]: olla's models read text and images, not {kind}")
        else:
            raise InvalidRequest(f'{where}[{j}] must be {{"type": "input_text", "text": "..."}}')
    return "".join(texts), images


def _input_image(part: dict[str, Any], where: str) -> Image:
    """An `input_image` part: its `image_url`, a data URI (a `file_id` is a 400: olla keeps no
    files); `detail` changes nothing here."""
    if part.get("image_url") is None and part.get("file_id") is not None:
        raise InvalidRequest(
            f"{where}.file_id: olla keeps no files; send the image as a data URI in image_url"
        )
    return data_url_image(part.get("image_url"), f"{where}.image_url")


def _reasoning(item: dict[str, Any], where: str) -> str:
    """The text of a reasoning item given back: its summary, else its reasoning text, else
    `encrypted_content` (Ollama puts its plain reasoning there)."""
    for key in ("summary", "content"):
        parts = item.get(key)
        if parts is None:
            continue
        if not isinstance(parts, list) or not all(
            isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts
        ):
            raise InvalidRequest(f'{where}.{key} must be a list of {{"type", "text"}} parts')
        if parts:
            return "\n\n".join(p["text"] for p in parts)
    encrypted = item.get("encrypted_content")
    return encrypted if isinstance(encrypted, str) else ""


def _call(item: dict[str, Any], where: str) -> dict[str, Any]:
    """A `function_call` item as a template's tool call (arguments as an object)."""
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{where}.call_id must be a non-empty string")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{where}.name must be a non-empty string")
    if not isinstance(arguments, str):
        raise InvalidRequest(f"{where}.arguments must be a string of JSON")
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        raise InvalidRequest(f"{where}.arguments is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest(f"{where}.arguments must be a JSON object")
    function = {"name": name, "arguments": parsed}
    return {"type": "function", "function": function, "id": call_id}


def _add_call(out: list[ChatMessage], call: dict[str, Any], thinking: str) -> None:
    """A call joins the assistant turn just before it (its text, its other calls), else starts
    one: a template shows a turn's calls together."""
    last = out[-1] if out else None
    if last is not None and _role(last) == "assistant":
        turn = _as_dict(last)
        out[-1] = turn
    else:
        turn = {"role": "assistant", "content": ""}
        out.append(turn)
    turn["tool_calls"] = [*turn.get("tool_calls", ()), call]
    if thinking:
        turn["thinking"] = thinking


def _role(message: ChatMessage) -> str:
    return message.role if isinstance(message, Message) else str(message["role"])


def _as_dict(message: ChatMessage) -> dict[str, Any]:
    if isinstance(message, Message):
        return {"role": message.role, "content": message.content}
    return dict(message)


def _output(item: dict[str, Any], where: str, names: dict[str, str]) -> ChatMessage:
    """A `function_call_output` as a tool message, named after the call it answers."""
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{where}.call_id must be a non-empty string")
    content, images = _content(item.get("output"), f"{where}.output")
    name = names.get(call_id)
    result = {
        "role": "tool",
        "content": content,
        "tool_call_id": call_id,
        "tool_name": name,
        "name": name,
    }
    return with_images(result, images)
