"""What `olla run` sends and shows besides the conversation: its flags, which the chat's `/set`
commands change later (`think`, `format`, `keep_alive`, verbose, word wrap)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from olla.answer import Think
from olla.errors import InvalidRequest
from olla.units import parse_duration

Format = str | dict[str, Any]  # "json", or a JSON schema


@dataclass
class RunOptions:
    """The session's settings of `olla run`; None leaves a field to the model or the daemon."""

    think: Think | None = None  # None: the model's way (it thinks if it can)
    hide_thinking: bool = False
    verbose: bool = False  # Ollama's timing summary after each answer, on stderr
    format: Format | None = None
    keep_alive: str | None = None  # as typed ("5m", "1h", "-1"): the daemon reads it
    word_wrap: bool = True  # on a terminal only; piped output is never wrapped

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body` with the request fields these options set."""
        if self.think is not None:
            body["think"] = self.think
        if self.format is not None:
            body["format"] = self.format
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        return body


def parse_format(text: str) -> Format:
    """`--format`'s value: "json", or a JSON schema object (as Ollama passes it on)."""
    if text == "json":
        return text
    try:
        schema = json.loads(text)
    except ValueError:
        schema = None
    if not isinstance(schema, dict):
        raise InvalidRequest(f'the format must be "json" or a JSON schema object, not {text!r}')
    return schema


def check_keep_alive(text: str) -> str:
    """`--keepalive`'s value, checked here so that a typo fails before the model loads."""
    try:
        parse_duration(text)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return text
