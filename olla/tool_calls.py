"""Tool calls: the tools a request offers, and the calls found in a model's output.

Models write calls in a few formats: Hermes/Qwen's `<tool_call>{json}</tool_call>` blocks,
Mistral's `[TOOL_CALLS] [...]`, Llama 3's `<|python_tag|>` or a bare JSON object (or list) as
the whole answer. Each call is `{"name", "arguments"}` (or `"parameters"`), and counts only if it
names one of the request's tools. While streaming, text that may begin a call is held back until
it is known to be one (then it becomes `tool_calls`) or not (then it is content).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from olla.errors import InvalidRequest

_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_OPEN = "<tool_call>"
_CLOSE = "</tool_call>"
_PREFIXES = ("[TOOL_CALLS]", "<|python_tag|>")
_STARTS = (_OPEN, *_PREFIXES, "{", "[")


@dataclass(frozen=True)
class ToolCall:
    """One call of a function the request offered."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: f"call_{secrets.token_hex(8)}")
    index: int = 0  # its place among the answer's calls

    def ollama(self) -> dict[str, Any]:
        """As Ollama returns it: `{"id", "function": {"index", "name", "arguments"}}`."""
        function = {"index": self.index, "name": self.name, "arguments": self.arguments}
        return {"id": self.id, "function": function}

    def openai(self) -> dict[str, Any]:
        arguments = json.dumps(self.arguments, ensure_ascii=False)
        return {
            "index": self.index,
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": arguments},
        }


def parse_tools(raw: Any) -> list[dict[str, Any]]:
    """`tools`: a list of `{"type": "function", "function": {"name", "description",
    "parameters"}}`, checked field by field."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequest('field "tools" must be a list of {"type": "function", ...} objects')
    for i, tool in enumerate(raw):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise InvalidRequest(f'tools[{i}] must be {{"type": "function", "function": {{...}}}}')
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(f"tools[{i}].function.name must be a string")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest(f"tools[{i}].function.parameters must be a JSON schema object")
    return list(raw)


def tool_names(tools: list[dict[str, Any]]) -> set[str]:
    return {t["function"]["name"] for t in tools}


def call_schema(tools: list[dict[str, Any]], name: str | None = None) -> dict[str, Any]:
    """A JSON schema that only a call of one of `tools` (or of `name`) satisfies: the grammar of
    a forced call (OpenAI's tool_choice "required", or a named function)."""
    chosen = [t["function"] for t in tools if name is None or t["function"]["name"] == name]
    if not chosen:
        raise InvalidRequest(f'field "tool_choice" names {name!r}, which is not among "tools"')
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": f["name"]},
                "arguments": f.get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in chosen
    ]
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


def find_calls(text: str, names: set[str]) -> tuple[str, list[ToolCall]]:
    """The calls in `text` and the content around them; no calls: the text unchanged."""
    stripped = text.strip()
    for prefix in _PREFIXES:
        if stripped.startswith(prefix):
            calls = _calls_in(_loads(stripped[len(prefix) :]), names)
            return ("", calls) if calls else (text, [])
    if _OPEN in text:
        calls = [c for block in _BLOCK.findall(text) for c in _calls_in(_loads(block), names)]
        if calls:
            return _BLOCK.sub("", text).strip(), calls
    if stripped[:1] in ("{", "["):
        calls = _calls_in(_loads(stripped), names)
        if calls:
            return "", calls
    return text, []


def _loads(text: str) -> Any:
    try:
        return json.loads(text.strip())
    except ValueError:
        return None


def _calls_in(value: Any, names: set[str]) -> list[ToolCall]:
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, Mapping):
            return []
        item = item.get("function", item) if isinstance(item.get("function"), Mapping) else item
        name = item.get("name")
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            arguments = _loads(arguments)
        if name not in names or not isinstance(arguments, dict):
            return []
        calls.append(ToolCall(name, arguments))
    return calls


class CallStream:
    """Streams content while holding back text that may be a tool call, as it arrives; a
    `<tool_call>` block is given out as calls as soon as it closes, other formats at the end."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self._held = ""
        self._calling = False  # a call has begun: hold it until it is complete (or the end)
        self._deciding = True  # nothing but whitespace or the start of a call marker so far
        self._after_call = False  # a call was given out: the space after it is not content

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        """The part of `text` (with what was held) that is content for sure, and the calls
        completed by it."""
        self._held += text
        content: list[str] = []
        calls: list[ToolCall] = []
        while True:
            if self._calling:
                done = self._complete_block()
                if not done:
                    return "".join(content), calls
                calls += done
                continue
            content.append(self._content())
            if not self._calling:
                return "".join(content), calls

    def _complete_block(self) -> list[ToolCall]:
        """The calls of a closed `<tool_call>` block at the start of what is held, taken out of
        it; [] while it is open, or when what is held is another format (kept to the end)."""
        start = self._held.lstrip()
        close = start.find(_CLOSE)
        if not start.startswith(_OPEN) or close < 0:
            return []
        calls = _calls_in(_loads(start[len(_OPEN) : close]), self.names)
        if calls:  # the next block, or content, may follow: decide afresh
            self._held = start[close + len(_CLOSE) :].lstrip()
            self._calling, self._deciding, self._after_call = False, True, True
        return calls

    def _content(self) -> str:
        if self._deciding:
            start = self._held.lstrip()
            if not start or any(m.startswith(start) for m in _STARTS):
                return ""  # still could be a call
            self._deciding = False
            if start.startswith(_STARTS):
                self._calling = True
                return ""
            if self._after_call:
                self._held = start
        at = self._held.find(_OPEN)
        if at >= 0:
            out, self._held, self._calling = self._held[:at], self._held[at:], True
            return out
        keep = _partial_suffix(self._held, _OPEN)
        out = self._held[: len(self._held) - keep]
        self._held = self._held[len(out) :]
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        """What was held: content left, and the calls in it."""
        held, self._held = self._held, ""
        if not held.strip():
            return held, []
        return find_calls(held, self.names)


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of `text` that begins `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0
