"""How a streamed answer's lines are framed on the wire: NDJSON (Ollama) or server-sent events."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def dumps(item: Mapping[str, Any]) -> bytes:
    """One JSON value as UTF-8, non-ASCII kept as is (as Ollama writes it)."""
    return json.dumps(item, ensure_ascii=False).encode()


@dataclass(frozen=True)
class Encoder:
    """Frames each line of a stream; `trailer` ends the stream (b"" when nothing does)."""

    content_type: str
    prefix: bytes
    suffix: bytes
    trailer: bytes = b""
    extra_headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type, **self.extra_headers}

    def line(self, item: Mapping[str, Any]) -> bytes:
        """One line of the stream: an item, or an error body rendered by the API."""
        return self.prefix + dumps(item) + self.suffix


NDJSON = Encoder("application/x-ndjson", b"", b"\n")
SSE = Encoder(
    "text/event-stream",
    b"data: ",
    b"\n\n",
    trailer=b"data: [DONE]\n\n",
    extra_headers={"Cache-Control": "no-cache"},
)


@dataclass(frozen=True)
class EventEncoder(Encoder):
    """Server-sent events, each named by its item's `type` (`event: <type>`, then `data:`), as
    Anthropic's streams and OpenAI's Responses streams are (Anthropic's SDKs skip an event
    without a name); no `[DONE]` after the last."""

    def line(self, item: Mapping[str, Any]) -> bytes:
        return b"event: " + str(item.get("type", "message")).encode() + b"\n" + super().line(item)


NAMED_SSE = EventEncoder(
    "text/event-stream", b"data: ", b"\n\n", extra_headers={"Cache-Control": "no-cache"}
)
