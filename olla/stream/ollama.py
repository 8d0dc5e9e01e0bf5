"""Ollama's shape of an answer: NDJSON lines of /api/generate (`response`) and /api/chat
(`message`), each with the model and the time, the last one with counts and timings."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from olla.stream.assembler import Answer, Delta, Line
from olla.tool_calls import ToolCall
from olla.wire.messages import Done, Logprob

CHAT = "message"  # /api/chat's lines carry a message
GENERATE = "response"  # /api/generate's, a response


def head(model: str) -> dict[str, Any]:
    """The fields every line of an answer opens with."""
    now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    return {"model": model, "created_at": now}


def payload(
    kind: str, text: str, calls: Sequence[ToolCall] = (), thinking: str = ""
) -> dict[str, Any]:
    """A line's text: `{"message": ...}` for chat, `{"response": ...}` for generate; the
    reasoning beside it as `thinking`, left out when there is none (as Ollama's omitempty)."""
    if kind != CHAT:
        return {"response": text, "thinking": thinking} if thinking else {"response": text}
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = [call.ollama() for call in calls]
    return {"message": message}


def chunk_line(model: str, kind: str, text: str) -> Line:
    """A line of streamed text: what a runner's direct stream writes, and the daemon's own."""
    return {**head(model), **payload(kind, text), "done": False}


class OllamaRenderer:
    """Lines of an /api/generate or /api/chat answer (`kind`: GENERATE or CHAT).

    `started_ns` (perf_counter_ns) is when the request arrived, for `total_duration`.
    """

    def __init__(self, model: str, kind: str, started_ns: int, load_ns: int) -> None:
        self.model = model
        self.kind = kind
        self.started_ns = started_ns
        self.load_ns = load_ns

    def opening(self) -> Iterable[Line]:
        return ()

    def delta(self, delta: Delta) -> Iterable[Line]:
        body = payload(self.kind, delta.text, delta.tool_calls, delta.thinking)
        line = {**head(self.model), **body}
        line["done"] = False
        if delta.logprobs:
            line["logprobs"] = _logprobs(delta.logprobs)
        return (line,)

    def closing(self, done: Done, calls: list[ToolCall]) -> Iterable[Line]:
        return (self.final(done, ""),)

    def whole(self, answer: Answer, done: Done) -> Line:
        line = self.final(done, answer.text, answer.tool_calls, answer.thinking)
        if answer.logprobs:
            line["logprobs"] = _logprobs(answer.logprobs)
        return line

    def final(
        self, done: Done, text: str = "", calls: Sequence[ToolCall] = (), thinking: str = ""
    ) -> Line:
        """The last line: why it ended, counts and timings (and the context, for generate)."""
        line = {**head(self.model), **payload(self.kind, text, calls, thinking)}
        line.update(
            done=True,
            done_reason=done.done_reason,
            total_duration=time.perf_counter_ns() - self.started_ns,
            load_duration=self.load_ns,
            prompt_eval_count=done.prompt_eval_count,
            prompt_eval_duration=done.prompt_eval_duration,
            eval_count=done.eval_count,
            eval_duration=done.eval_duration,
        )
        if self.kind == GENERATE:
            line["context"] = list(done.context)
        return line


def _logprobs(entries: Iterable[Logprob]) -> list[dict[str, Any]]:
    return [entry.to_json() for entry in entries]


def error_body(status: int, message: str) -> Line:
    """Ollama's error: `{"error": "..."}` (the status goes on the response)."""
    return {"error": message}
