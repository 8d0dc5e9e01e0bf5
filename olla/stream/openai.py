"""OpenAI's shape of an answer: chat completions and the legacy completions, as a whole object or
as server-sent chunks, and OpenAI's error object."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from olla.stream.assembler import Answer, Delta, Line
from olla.tool_calls import ToolCall
from olla.wire.messages import Done, Logprob

CHAT = "chat.completion"
COMPLETION = "text_completion"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(status: int, message: str) -> Line:
    """OpenAI's error object for a status and message."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    code = "model_not_found" if status == 404 and "model" in message else None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@dataclass(frozen=True)
class OpenAIRenderer:
    """Lines of a chat completion (`kind` CHAT) or a legacy completion (COMPLETION).

    `logprobs`: alternatives asked per token (None: off); `include_usage`: a usage chunk ends a
    stream (`stream_options.include_usage`).
    """

    kind: str
    id: str
    created: int
    model: str
    logprobs: int | None = None
    include_usage: bool = False

    def opening(self) -> Iterable[Line]:
        if self.kind != CHAT:
            return ()
        role = {"index": 0, "delta": {"role": "assistant", "content": ""}}
        role.update(logprobs=None, finish_reason=None)
        return ({**self._head(chunk=True), "choices": [role]},)

    def delta(self, delta: Delta) -> Iterable[Line]:
        head = self._head(chunk=True)
        # content as it comes ("" included), but none in a chunk of calls alone (as OpenAI's)
        text = delta.text if delta.text or not delta.tool_calls else None
        if delta.thinking and (delta.text or delta.tool_calls):
            # reasoning and answer in one piece: two chunks, the reasoning first (as Ollama)
            first = self._choice(None, None, True, (), delta.logprobs, delta.thinking)
            second = self._choice(text, None, True, delta.tool_calls)
            return ({**head, "choices": [first]}, {**head, "choices": [second]})
        choice = self._choice(text, None, True, delta.tool_calls, delta.logprobs, delta.thinking)
        return ({**head, "choices": [choice]},)

    def closing(self, done: Done, calls: list[ToolCall]) -> Iterable[Line]:
        finish = self._choice(None, _finish_reason(done, calls), True)
        lines = [{**self._head(chunk=True), "choices": [finish]}]
        if self.include_usage:
            lines.append({**self._head(chunk=True), "choices": [], "usage": _usage(done)})
        return lines

    def whole(self, answer: Answer, done: Done) -> Line:
        calls = answer.tool_calls
        reason = _finish_reason(done, calls)
        choice = self._choice(answer.text, reason, False, calls, answer.logprobs, answer.thinking)
        return {**self._head(chunk=False), "choices": [choice], "usage": _usage(done)}

    def _head(self, chunk: bool) -> Line:
        kind = self.kind + (".chunk" if chunk and self.kind == CHAT else "")
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_olla",
        }

    def _choice(
        self,
        text: str | None,
        finish: str | None,
        chunk: bool,
        calls: Sequence[ToolCall] = (),
        logprobs: Sequence[Logprob] = (),
        thinking: str = "",
    ) -> Line:
        shown = self._logprobs(logprobs)
        if self.kind == COMPLETION:
            return {"index": 0, "text": text or "", "logprobs": shown, "finish_reason": finish}
        if not chunk:
            # with tool calls and no text, content is null (as OpenAI), else the text
            message: dict[str, Any] = {
                "role": "assistant",
                "content": text or (None if calls else ""),
            }
            message.update(_reasoning(thinking))
            if calls:
                message["tool_calls"] = [_call(call, indexed=False) for call in calls]
            return {"index": 0, "message": message, "logprobs": shown, "finish_reason": finish}
        delta: dict[str, Any] = {} if text is None else {"content": text}
        delta.update(_reasoning(thinking))
        if calls:
            delta["tool_calls"] = [_call(call, indexed=True) for call in calls]
        return {"index": 0, "delta": delta, "logprobs": shown, "finish_reason": finish}

    def _logprobs(self, entries: Sequence[Logprob]) -> dict[str, Any] | None:
        """Chat's `content` list, or the legacy completions' parallel lists."""
        if self.logprobs is None or not entries:
            return None
        if self.kind == CHAT:
            return {"content": [entry.to_json() for entry in entries]}
        offsets, at = [], 0
        for entry in entries:
            offsets.append(at)
            at += len(entry.token)
        return {
            "tokens": [e.token for e in entries],
            "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{t.token: t.logprob for t in e.top} for e in entries],
            "text_offset": offsets,
        }


def _reasoning(thinking: str) -> dict[str, str]:
    """The reasoning under Ollama's field and under the one many OpenAI-style clients read."""
    return {"reasoning": thinking, "reasoning_content": thinking} if thinking else {}


def _call(call: ToolCall, indexed: bool) -> dict[str, Any]:
    shown = call.openai()
    return shown if indexed else {k: v for k, v in shown.items() if k != "index"}


def _usage(done: Done) -> dict[str, Any]:
    prompt, completion = done.prompt_eval_count, done.eval_count
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        # OpenAI's field: the prompt tokens the prefix cache supplied
        "prompt_tokens_details": {"cached_tokens": done.prompt_cached_count},
    }


def _finish_reason(done: Done, calls: Sequence[ToolCall]) -> str:
    if calls:
        return "tool_calls"
    return "length" if done.done_reason == "length" else "stop"
