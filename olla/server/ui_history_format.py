"""The web page's saved chats as values: parsed from JSON with bounds, written back as JSON (the
export and import format) and as a readable Markdown transcript."""

from __future__ import annotations

import binascii
from base64 import b64decode
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from olla.errors import InvalidRequest

MAX_TITLE = 200  # characters: a line in the list, not a document
MAX_MODEL = 300  # a model name with host, namespace and tag fits in far less
MAX_MESSAGES = 2000  # per chat; a long conversation is some hundreds
MAX_IMAGES = 16  # per message
MAX_STATS = 16  # keys of a message's stats object
ROLES = ("system", "user", "assistant", "tool")
CHAT_FIELDS = ("title", "model", "system", "options", "messages")
EXPORT_FIELDS = (*CHAT_FIELDS, "created_at", "updated_at", "format")
FORMAT = "olla-chat/1"  # names an exported chat, so an import can tell it from anything else
DEFAULT_TITLE = "New chat"


@dataclass(frozen=True)
class Message:
    """One message of a chat, as Ollama's chat message plus the page's `stats` for an answer."""

    role: str
    content: str
    thinking: str = ""
    images: tuple[str, ...] = ()  # base64, as Ollama's `images`
    stats: dict[str, float | int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Chat:
    """A whole chat; `id`, `created_at` and `updated_at` (Unix seconds) are the store's."""

    title: str = DEFAULT_TITLE
    model: str = ""
    system: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    messages: tuple[Message, ...] = ()
    id: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


def chat_from_json(body: dict[str, Any], base: Chat | None = None) -> Chat:
    """`base` (a new chat if none) with the chat fields `body` has replaced; a 400 naming the
    field for a bad one. Fields outside CHAT_FIELDS are the caller's to ignore or refuse."""
    chat = base or Chat()
    changes: dict[str, Any] = {}
    if "title" in body:
        changes["title"] = _text(body, "title", MAX_TITLE).strip() or DEFAULT_TITLE
    if "model" in body:
        changes["model"] = _text(body, "model", MAX_MODEL)
    if "system" in body:
        changes["system"] = _text(body, "system")
    if "options" in body:
        options = body["options"]
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise InvalidRequest('"options" must be a JSON object of Ollama options')
        changes["options"] = options
    if "messages" in body:
        changes["messages"] = _messages(body["messages"])
    return replace(chat, **changes)


def _text(body: dict[str, Any], name: str, limit: int | None = None) -> str:
    value = body[name]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f'"{name}" must be a string')
    if limit is not None and len(value) > limit:
        raise InvalidRequest(f'"{name}" is {len(value)} characters; at most {limit} are kept')
    return value


def _messages(value: Any) -> tuple[Message, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequest('"messages" must be a list of chat messages')
    if len(value) > MAX_MESSAGES:
        raise InvalidRequest(
            f"a chat holds at most {MAX_MESSAGES} messages, this one has {len(value)}; "
            "start a new chat"
        )
    return tuple(_message(item, i) for i, item in enumerate(value))


def _message(item: Any, i: int) -> Message:
    where = f"messages[{i}]"
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where} must be an object with role and content")
    role = item.get("role")
    if role not in ROLES:
        raise InvalidRequest(f"{where}.role must be one of {', '.join(ROLES)}, not {role!r}")
    content, thinking = item.get("content", ""), item.get("thinking", "")
    for name, text in (("content", content), ("thinking", thinking)):
        if text is not None and not isinstance(text, str):
            raise InvalidRequest(f"{where}.{name} must be a string")
    return Message(role, content or "", thinking or "", _images(item, where), _stats(item, where))


def _images(item: dict[str, Any], where: str) -> tuple[str, ...]:
    images = item.get("images") or []
    if not isinstance(images, list) or len(images) > MAX_IMAGES:
        raise InvalidRequest(f"{where}.images must be a list of at most {MAX_IMAGES} images")
    for j, image in enumerate(images):
        try:
            if not isinstance(image, str):
                raise ValueError
            b64decode(image, validate=True)
        except (ValueError, binascii.Error):
            raise InvalidRequest(f"{where}.images[{j}] must be base64 image data") from None
    return tuple(images)


def _stats(item: dict[str, Any], where: str) -> dict[str, float | int | str]:
    stats = item.get("stats") or {}
    if not isinstance(stats, dict) or len(stats) > MAX_STATS:
        raise InvalidRequest(f"{where}.stats must be an object of at most {MAX_STATS} numbers")
    for key, value in stats.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise InvalidRequest(f"{where}.stats.{key} must be a number or a string")
    return dict(stats)


def message_json(message: Message) -> dict[str, Any]:
    """A message as the page sends it: the optional fields only when set."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.thinking:
        out["thinking"] = message.thinking
    if message.images:
        out["images"] = list(message.images)
    if message.stats:
        out["stats"] = message.stats
    return out


def iso_time(seconds: float) -> str:
    """Unix seconds as RFC 3339 in UTC, as the API shows times."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def parse_time(value: Any, where: str) -> float:
    """An RFC 3339 time from an imported chat, as Unix seconds."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{where} must be an RFC 3339 time, not {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def summary_json(chat: Chat) -> dict[str, Any]:
    """A chat in the list: no messages."""
    return {
        "id": chat.id,
        "title": chat.title,
        "model": chat.model,
        "created_at": iso_time(chat.created_at),
        "updated_at": iso_time(chat.updated_at),
    }


def chat_json(chat: Chat) -> dict[str, Any]:
    """The whole chat, as `GET /ui/api/chats/{id}` answers."""
    return {
        "id": chat.id,
        "title": chat.title,
        "model": chat.model,
        "system": chat.system,
        "options": chat.options,
        "messages": [message_json(m) for m in chat.messages],
        "created_at": iso_time(chat.created_at),
        "updated_at": iso_time(chat.updated_at),
    }


def export_json(chat: Chat) -> dict[str, Any]:
    """The chat as a file: what an import takes back (no id: an import makes a new chat)."""
    body = chat_json(chat)
    del body["id"]
    return {"format": FORMAT, **body}


def import_chat(item: Any, where: str = "chat") -> Chat:
    """An exported chat read back (the times kept); a 400 naming what is wrong."""
    if not isinstance(item, dict) or item.get("format") != FORMAT:
        raise InvalidRequest(
            f'{where} is not an exported olla chat: it needs "format": "{FORMAT}" '
            "(export one with GET /ui/api/chats/{id}/export?format=json)"
        )
    chat = chat_from_json(item)
    created = parse_time(item["created_at"], f"{where}.created_at") if "created_at" in item else 0
    updated = parse_time(item["updated_at"], f"{where}.updated_at") if "updated_at" in item else 0
    return replace(chat, created_at=created, updated_at=updated or created)


def export_markdown(chat: Chat) -> str:
    """A readable transcript: the roles as headings, thinking folded, images noted, stats."""
    lines = [f"# {chat.title}", ""]
    if chat.model:
        lines.append(f"- Model: `{chat.model}`")
    lines += [f"- Created: {iso_time(chat.created_at)}", f"- Updated: {iso_time(chat.updated_at)}"]
    if chat.options:
        shown = ", ".join(f"{k}={v}" for k, v in chat.options.items())
        lines.append(f"- Options: {shown}")
    lines.append("")
    if chat.system:
        lines += ["## System", "", chat.system, ""]
    for message in chat.messages:
        lines += _message_markdown(message)
    return "\n".join(lines).rstrip() + "\n"


def _message_markdown(message: Message) -> list[str]:
    lines = [f"## {message.role.capitalize()}", ""]
    if message.thinking:
        lines += [
            "<details><summary>Thinking</summary>",
            "",
            message.thinking,
            "",
            "</details>",
            "",
        ]
    if message.images:
        count = len(message.images)
        lines += [f"*({count} image{'s' if count > 1 else ''} attached)*", ""]
    if message.content:
        lines += [message.content, ""]
    if message.stats:
        lines += ["*" + " · ".join(f"{k}: {v}" for k, v in message.stats.items()) + "*", ""]
    return lines
