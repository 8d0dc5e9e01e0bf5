"""OpenAI's Responses shape of an answer: a Response object with output items (reasoning, a
message, function calls), or the stream of typed events the official SDK reads.

A stream opens with `response.created` and `response.in_progress`; each output item then comes
as `response.output_item.added`, its deltas and `response.output_item.done`, one item open at a
time (reasoning, then the message; a call closes what is open); it ends with
`response.completed`, or `response.incomplete` when the answer reached `max_output_tokens`. Every
event carries `sequence_number`; an error after the start is a last `response.failed`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from olla.stream.assembler import Answer, Delta, Line
from olla.tool_calls import ToolCall
from olla.wire.messages import Done

REASONING = "reasoning"
MESSAGE = "message"


# an error's status as the Response object's `error.code` (the SDK's values)
_ERROR_CODES = {429: "rate_limit_exceeded", 400: "invalid_prompt"}


@dataclass
class _Open:
    """The output item a stream is writing: reasoning or a message."""

    kind: str
    id: str
    index: int
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class ResponsesRenderer:
    """Lines of one Response: events while streaming, else the whole object. `settings`: what
    the object repeats from its request (instructions, tools, text, ...)."""

    def __init__(self, id: str, created_at: int, model: str, settings: Mapping[str, Any]) -> None:
        self.id = id
        self.created_at = created_at
        self.model = model
        self.settings = settings
        self._sequence = 0
        self._items: list[Line] = []  # finished output items, in order
        self._open: _Open | None = None
        self._has_message = False  # a message item was given (an answer has one, or calls)

    def opening(self) -> Iterable[Line]:
        started = self._response("in_progress", [])
        return (
            self._event("response.created", response=started),
            self._event("response.in_progress", response=started),
        )

    def delta(self, delta: Delta) -> Iterable[Line]:
        lines: list[Line] = []
        if delta.thinking:
            lines += self._write(REASONING, delta.thinking)
        if delta.text:
            lines += self._write(MESSAGE, delta.text)
        for call in delta.tool_calls:
            lines += self._close()
            lines += self._call(call)
        return lines

    def closing(self, done: Done, calls: list[ToolCall]) -> Iterable[Line]:
        status = _status(done)
        lines = self._close(status)
        if not self._has_message and not calls:  # an empty answer is an empty message
            lines += self._write(MESSAGE, "") + self._close(status)
        final = self._response(status, list(self._items), done)
        lines.append(self._event(f"response.{status}", response=final))
        return lines

    def whole(self, answer: Answer, done: Done) -> Line:
        status = _status(done)
        output = []
        if answer.thinking:
            output.append(reasoning_item(_id("rs"), answer.thinking))
        if answer.text or not answer.tool_calls:
            output.append(message_item(_id("msg"), answer.text, status))
        output += [call_item(_id("fc"), call) for call in answer.tool_calls]
        return self._response(status, output, done)

    def failed(self, status: int, message: str) -> Line:
        """The last event of a stream that failed after it started (the writer's error shape)."""
        code = _ERROR_CODES.get(status, "server_error")
        response = self._response("failed", list(self._items))
        response["error"] = {"code": code, "message": message}
        return self._event("response.failed", response=response)

    def _write(self, kind: str, text: str) -> list[Line]:
        lines = self._close() if self._open is not None and self._open.kind != kind else []
        item = self._open
        if item is None:
            item, opened = self._start(kind)
            lines += opened
        item.parts.append(text)
        if kind == REASONING:
            where = {"item_id": item.id, "output_index": item.index, "summary_index": 0}
            lines.append(self._event("response.reasoning_summary_text.delta", **where, delta=text))
        elif text:
            where = {"item_id": item.id, "output_index": item.index, "content_index": 0}
            lines.append(
                self._event("response.output_text.delta", **where, delta=text, logprobs=[])
            )
        return lines

    def _start(self, kind: str) -> tuple[_Open, list[Line]]:
        index = len(self._items)
        if kind == REASONING:
            item = _Open(kind, _id("rs"), index)
            added = {"id": item.id, "type": REASONING, "summary": []}
            where = {"item_id": item.id, "output_index": index, "summary_index": 0}
            part = ("response.reasoning_summary_part.added", _summary(""))
        else:
            item = _Open(kind, _id("msg"), index)
            added = {**message_item(item.id, "", "in_progress"), "content": []}
            where = {"item_id": item.id, "output_index": index, "content_index": 0}
            part = ("response.content_part.added", _output_text(""))
            self._has_message = True
        self._open = item
        return item, [
            self._event("response.output_item.added", output_index=index, item=added),
            self._event(part[0], **where, part=part[1]),
        ]

    def _close(self, status: str = "completed") -> list[Line]:
        item, self._open = self._open, None
        if item is None:
            return []
        text = item.text
        if item.kind == REASONING:
            where = {"item_id": item.id, "output_index": item.index, "summary_index": 0}
            done = reasoning_item(item.id, text)
            lines = [
                self._event("response.reasoning_summary_text.done", **where, text=text),
                self._event("response.reasoning_summary_part.done", **where, part=_summary(text)),
            ]
        else:
            where = {"item_id": item.id, "output_index": item.index, "content_index": 0}
            done = message_item(item.id, text, status)
            lines = [
                self._event("response.output_text.done", **where, text=text, logprobs=[]),
                self._event("response.content_part.done", **where, part=_output_text(text)),
            ]
        self._items.append(done)
        lines.append(self._event("response.output_item.done", output_index=item.index, item=done))
        return lines

    def _call(self, call: ToolCall) -> list[Line]:
        index, done = len(self._items), call_item(_id("fc"), call)
        self._items.append(done)
        where = {"item_id": done["id"], "output_index": index}
        arguments = done["arguments"]
        return [
            self._event(
                "response.output_item.added",
                output_index=index,
                item={**done, "status": "in_progress", "arguments": ""},
            ),
            self._event("response.function_call_arguments.delta", **where, delta=arguments),
            self._event(
                "response.function_call_arguments.done",
                **where,
                name=call.name,
                arguments=arguments,
            ),
            self._event("response.output_item.done", output_index=index, item=done),
        ]

    def _event(self, kind: str, **fields: Any) -> Line:
        line = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return line

    def _response(self, status: str, output: list[Line], done: Done | None = None) -> Line:
        finished = done is not None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "completed_at": int(time.time()) if finished else None,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete"
            else None,
            "model": self.model,
            "output": output,
            "usage": _usage(done) if done is not None else None,
            **self.settings,
        }


def reasoning_item(id: str, text: str) -> Line:
    """A reasoning output item; its text is the summary (olla's models give it whole)."""
    return {"id": id, "type": REASONING, "summary": [_summary(text)] if text else []}


def message_item(id: str, text: str, status: str) -> Line:
    """The assistant's message output item."""
    return {
        "id": id,
        "type": MESSAGE,
        "status": status,
        "role": "assistant",
        "content": [_output_text(text)],
    }


def call_item(id: str, call: ToolCall) -> Line:
    """A `function_call` output item; `call_id` is what its `function_call_output` names."""
    return {
        "id": id,
        "type": "function_call",
        "status": "completed",
        "call_id": call.id,
        "name": call.name,
        "arguments": call.openai()["function"]["arguments"],
    }


def _summary(text: str) -> Line:
    return {"type": "summary_text", "text": text}


def _output_text(text: str) -> Line:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _status(done: Done) -> str:
    return "incomplete" if done.done_reason == "length" else "completed"


def _usage(done: Done) -> dict[str, Any]:
    prompt, output = done.prompt_eval_count, done.eval_count
    return {
        "input_tokens": prompt,
        # olla counts the prompt's tokens found in its prefix cache, not those it put there
        "input_tokens_details": {
            "cached_tokens": done.prompt_cached_count,
            "cache_write_tokens": 0,
        },
        "output_tokens": output,
        # nor which of an answer's tokens were reasoning
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + output,
    }
