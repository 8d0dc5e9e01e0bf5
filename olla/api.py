"""Wire shapes of Ollama's /api/* requests: validated parsing into dataclasses.

Every parser raises InvalidRequest naming the field and what it should be, so the server answers
400 with a message the caller can act on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from olla.chat import MAX_TOP_LOGPROBS, Message, coerce_parameters
from olla.errors import InvalidRequest
from olla.images import ChatMessage, images_field, with_images
from olla.registry.capabilities import THINK_LEVELS
from olla.registry.create_request import CreateRequest
from olla.registry.modelfile import MESSAGE_ROLES as MODELFILE_ROLES
from olla.registry.names import ModelName
from olla.units import parse_duration

MESSAGE_ROLES = ("system", "user", "assistant", "tool")


def _typed(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(key)
    if value is None:
        return None
    # bool is an int subclass; a JSON true must not pass as a number
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise InvalidRequest(f'field "{key}" must be {what}, got {type(value).__name__}')
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def get_str(body: Mapping[str, Any], key: str) -> str | None:
    return _typed(body, key, str, "a string")


def get_bool(body: Mapping[str, Any], key: str, default: bool) -> bool:
    value = _typed(body, key, bool, "true or false")
    return default if value is None else value


def get_int(body: Mapping[str, Any], key: str, lo: int, hi: int | None = None) -> int | None:
    """An optional integer field within [lo, hi]; the error names the field and the range."""
    value = _typed(body, key, int, "an integer")
    if value is None or (value >= lo and (hi is None or value <= hi)):
        return value
    bounds = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
    raise InvalidRequest(f'field "{key}" must be an integer {bounds}, not {value}')


def get_object(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    return _typed(body, key, dict, "an object") or {}


def get_model_name(body: Mapping[str, Any], key: str = "model") -> ModelName:
    """The model name from `model` (or Ollama's older `name`), parsed and validated."""
    value = get_str(body, key) or (get_str(body, "name") if key == "model" else None)
    if not value:
        raise InvalidRequest(f'missing field "{key}": name the model, e.g. "smollm2:135m"')
    return ModelName.parse(value)


def think_of(value: Any) -> bool | str | None:
    """Ollama's `think`: true, false or a level ("low", "medium", "high"; "max" is "high");
    None when absent (the model's default: on for a model that thinks)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (*THINK_LEVELS, "max"):
        return "high" if value.lower() == "max" else value.lower()
    raise InvalidRequest(
        f'field "think" must be true, false, "low", "medium" or "high", not {json.dumps(value)}'
    )


def logprobs_of(body: Mapping[str, Any], flag: str, top: str) -> int | None:
    """How many alternatives to report per token (0: the token's own only); None: off."""
    wanted = body.get(flag)
    if wanted is None or wanted is False:
        if body.get(top):
            raise InvalidRequest(f'field "{top}" needs "{flag}": true')
        return None
    if wanted is not True:
        raise InvalidRequest(f'field "{flag}" must be true or false')
    return get_int(body, top, 0, MAX_TOP_LOGPROBS) or 0


def format_of(value: Any) -> str | dict[str, Any] | None:
    """Ollama's `format`: "json", a JSON schema, or nothing ("" and null)."""
    if value is None or value == "":
        return None
    if value == "json" or isinstance(value, dict):
        return value
    raise InvalidRequest(f'field "format" must be "json" or a JSON schema object, not {value!r}')


def keep_alive_of(value: Any) -> float | None:
    """`keep_alive` in seconds: a duration ("5m", "1h30m") or a number; None: the daemon's."""
    if value is None or value == "":  # "" as absent: the daemon's OLLA_KEEP_ALIVE
        return None
    if not isinstance(value, (str, int, float)):
        raise InvalidRequest('field "keep_alive" must be a duration ("5m", "1h30m") or seconds')
    try:
        return parse_duration(value)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f'field "keep_alive": {exc}') from None


def parse_messages(
    raw: Any, key: str = "messages", roles: tuple[str, ...] = MESSAGE_ROLES
) -> list[Message]:
    """A list of {"role", "content"} objects whose roles are among `roles`."""
    if not isinstance(raw, list):
        raise InvalidRequest(f'field "{key}" must be a list of {{"role", "content"}} objects')
    return [_message(item, f"{key}[{i}]", roles) for i, item in enumerate(raw)]


def _message(item: Any, where: str, roles: tuple[str, ...]) -> Message:
    if not isinstance(item, dict):
        raise InvalidRequest(f'{where} must be an object with "role" and "content"')
    role, content = item.get("role"), item.get("content")
    if role not in roles:
        raise InvalidRequest(f"{where}.role must be one of {', '.join(roles)}")
    if content is not None and not isinstance(content, str):
        raise InvalidRequest(f"{where}.content must be a string")
    return Message(role, content or "")


def parse_chat_messages(raw: Any) -> list[ChatMessage]:
    """Ollama's chat messages: plain ones as Messages; with `images`, `tool_calls`, `tool_name`,
    `tool_call_id` or `thinking`, dicts in the shape chat templates expect
    (`tool_calls[].function.{name, arguments}`; images as olla.images holds them)."""
    if not isinstance(raw, list):
        raise InvalidRequest('field "messages" must be a list of {"role", "content"} objects')
    out: list[ChatMessage] = []
    for i, item in enumerate(raw):
        plain = _message(item, f"messages[{i}]", MESSAGE_ROLES)
        extra = _message_extras(item, f"messages[{i}]")
        message: ChatMessage = plain
        if extra:
            message = {"role": plain.role, "content": plain.content, **extra}
        images = images_field(item.get("images"), f"messages[{i}].images")
        out.append(with_images(message, images))
    return out


def _message_extras(item: dict[str, Any], where: str) -> dict[str, Any]:
    """What a message carries beside its role and content, checked: calls it made, the tool
    it answers (by name and call id), the reasoning before it."""
    extra: dict[str, Any] = {}
    calls = item.get("tool_calls")
    if calls:
        at = f"{where}.tool_calls"
        listed = _list(calls, at)
        extra["tool_calls"] = [tool_call_of(c, f"{at}[{j}]") for j, c in enumerate(listed)]
    for key in ("tool_name", "tool_call_id", "thinking"):
        value = item.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"{where}.{key} must be a string")
        if value:
            extra[key] = value
    if "tool_name" in extra:
        extra["name"] = extra["tool_name"]
    return extra


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRequest(f"{where} must be a list")
    return value


def tool_call_of(call: Any, where: str) -> dict[str, Any]:
    """A call as templates expect it: `{"type": "function", "function": {name, arguments}}`
    with arguments as an object (OpenAI sends them as a JSON string)."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequest(f"{where}.function.name must be a string")
    arguments = function.get("arguments") or {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            raise InvalidRequest(f"{where}.function.arguments is not valid JSON") from None
    if not isinstance(arguments, dict):
        raise InvalidRequest(f"{where}.function.arguments must be an object")
    shown: dict[str, Any] = {"name": function["name"], "arguments": arguments}
    if type(function.get("index")) is int:
        shown["index"] = function["index"]
    out = {"type": "function", "function": shown}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def _digest_map(body: Mapping[str, Any], key: str) -> dict[str, str]:
    raw = get_object(body, key)
    for name, digest in raw.items():
        if not isinstance(digest, str):
            raise InvalidRequest(f'field "{key}" maps file names to digests; {name!r} is not one')
    return dict(raw)


def parse_create(body: Mapping[str, Any]) -> CreateRequest:
    """Validate a create body; `modelfile`/`path` are Ollama's older form, read on the daemon by
    `olla.registry.create_request.request_from_text`."""
    license_value = body.get("license")
    if isinstance(license_value, str):
        license_value = [license_value]
    if license_value is not None and not (
        isinstance(license_value, list) and all(isinstance(x, str) for x in license_value)
    ):
        raise InvalidRequest('field "license" must be a string or a list of strings')
    raw_messages = body.get("messages")
    return CreateRequest(
        model=get_model_name(body),
        from_=get_str(body, "from"),
        files=_digest_map(body, "files"),
        adapters=_digest_map(body, "adapters"),
        template=get_str(body, "template"),
        system=get_str(body, "system"),
        parameters=coerce_parameters(get_object(body, "parameters")),
        # stored messages must survive `olla show --modelfile`: Modelfile roles only
        messages=None
        if raw_messages is None
        else parse_messages(raw_messages, roles=MODELFILE_ROLES),
        licenses=license_value,
        quantize=get_str(body, "quantize"),
        stream=get_bool(body, "stream", True),
        modelfile=get_str(body, "modelfile"),
        path=get_str(body, "path"),
    )


@dataclass
class CopyRequest:
    """POST /api/copy."""

    source: ModelName
    destination: ModelName

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> CopyRequest:
        return cls(get_model_name(body, "source"), get_model_name(body, "destination"))
