"""Anthropic's shape of an answer: a Messages object, or its server-sent events, and
Anthropic's error object.

A stream is `message_start`, a `ping`, then for each content block (thinking, text, tool_use)
`content_block_start`, its deltas and `content_block_stop`, then `message_delta` (the stop
reason and usage) and `message_stop`. The prompt's token count is known only at the end, so
`message_start` carries 0 input tokens and `message_delta` the true count (Anthropic's SDKs take
the later value).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from olla.stream.assembler import Answer, Delta, Line
from olla.tool_calls import ToolCall
from olla.wire.messages import Done

# Anthropic signs its reasoning so that it can check what a client sends back; olla's is the
# model's own text and is never checked, but clients expect the field to be there
SIGNATURE = "olla"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",  # Anthropic's own is 529; olla's busy answer is 503
    504: "timeout_error",
}


def error_body(status: int, message: str) -> Line:
    """Anthropic's error object for a status and message (`event: error` in a stream)."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def tool_use_id(call: ToolCall) -> str:
    """A call's id as Anthropic spells its ids (`toolu_...`)."""
    return "toolu_" + call.id.removeprefix("call_")


class AnthropicRenderer:
    """Lines of one /v1/messages answer; a stream's open block is this object's state."""

    def __init__(self, message_id: str, model: str) -> None:
        self.id = message_id
        self.model = model
        self._index = -1  # the last block started
        self._open = ""  # the type of the block open now, "" when none

    def opening(self) -> Iterable[Line]:
        usage = {"input_tokens": 0, "output_tokens": 0}
        message = {**self._head(), "content": [], "stop_reason": None, "stop_sequence": None}
        return (
            {"type": "message_start", "message": {**message, "usage": usage}},
            {"type": "ping"},
        )

    def delta(self, delta: Delta) -> Iterable[Line]:
        lines: list[Line] = []
        if delta.thinking:
            lines += self._into("thinking", {"thinking": "", "signature": ""})
            lines.append(self._delta({"type": "thinking_delta", "thinking": delta.thinking}))
        if delta.text:
            lines += self._into("text", {"text": ""})
            lines.append(self._delta({"type": "text_delta", "text": delta.text}))
        for call in delta.tool_calls:
            # a call comes whole: its block opens, takes its input as one piece, and closes
            lines += self._into("tool_use", {"id": tool_use_id(call), "name": call.name})
            arguments = json.dumps(call.arguments, ensure_ascii=False)
            lines.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
            lines += self._close()
        return lines

    def closing(self, done: Done, calls: list[ToolCall]) -> Iterable[Line]:
        end = {"stop_reason": _stop_reason(done, calls), "stop_sequence": _stop_sequence(done)}
        return (
            *self._close(),
            {"type": "message_delta", "delta": end, "usage": _usage(done)},
            {"type": "message_stop"},
        )

    def whole(self, answer: Answer, done: Done) -> Line:
        content: list[dict[str, Any]] = []
        if answer.thinking:
            block = {"type": "thinking", "thinking": answer.thinking, "signature": SIGNATURE}
            content.append(block)
        if answer.text:
            content.append({"type": "text", "text": answer.text})
        content += [_tool_use(call) for call in answer.tool_calls]
        return {
            **self._head(),
            "content": content,
            "stop_reason": _stop_reason(done, answer.tool_calls),
            "stop_sequence": _stop_sequence(done),
            "usage": _usage(done),
        }

    def _head(self) -> Line:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model}

    def _into(self, kind: str, start: dict[str, Any]) -> list[Line]:
        """Lines that open a block of `kind` (closing the one open), or none if it is open."""
        if self._open == kind and kind != "tool_use":
            return []
        lines = self._close()
        self._index, self._open = self._index + 1, kind
        block = {"type": kind, **start}
        if kind == "tool_use":
            block["input"] = {}
        lines.append({"type": "content_block_start", "index": self._index, "content_block": block})
        return lines

    def _close(self) -> list[Line]:
        """Lines that end the open block, if any: a thinking block gets its signature first."""
        if not self._open:
            return []
        lines: list[Line] = []
        if self._open == "thinking":
            lines.append(self._delta({"type": "signature_delta", "signature": SIGNATURE}))
        lines.append({"type": "content_block_stop", "index": self._index})
        self._open = ""
        return lines

    def _delta(self, delta: dict[str, Any]) -> Line:
        return {"type": "content_block_delta", "index": self._index, "delta": delta}


def _tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_use_id(call), "name": call.name, "input": call.arguments}


def _usage(done: Done) -> dict[str, int]:
    return {"input_tokens": done.prompt_eval_count, "output_tokens": done.eval_count}


def _stop_reason(done: Done, calls: Sequence[ToolCall]) -> str:
    if calls:
        return "tool_use"
    if done.done_reason == "length":
        return "max_tokens"
    return "stop_sequence" if done.stop_sequence else "end_turn"


def _stop_sequence(done: Done) -> str | None:
    return done.stop_sequence or None
