"""The runner's events as neutral pieces of an answer, and the loop every API renders them with.

`Assembler` turns text chunks into `Delta`s, holding back text that may be a tool call (it
becomes `tool_calls` at the end, or content if it was not one). `render` drives a `Renderer`
over a runner's events: streaming, each delta becomes the API's lines as it comes; otherwise the
deltas are gathered into one `Answer` and rendered once. A new API is a new `Renderer`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from olla.errors import OllaError
from olla.tool_calls import CallStream, ToolCall
from olla.wire.messages import Chunk, Done, Event, Logprob

Line = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of an answer: text, the tokens' log-probabilities, calls found.

    `closing`: the last piece, made when the answer ended (what was held back, and the calls).
    """

    text: str = ""
    logprobs: tuple[Logprob, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    closing: bool = False


@dataclass
class Answer:
    """A whole answer, for a client that did not ask for a stream."""

    parts: list[str] = field(default_factory=list)
    logprobs: list[Logprob] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, delta: Delta) -> None:
        self.parts.append(delta.text)
        self.logprobs.extend(delta.logprobs)
        self.tool_calls.extend(delta.tool_calls)


class Assembler:
    """Deltas from one answer's chunks; `tool_names`: the calls to look for (none: text only)."""

    def __init__(self, tool_names: set[str] | None = None) -> None:
        self._calls = CallStream(tool_names) if tool_names else None

    def feed(self, chunk: Chunk) -> Delta | None:
        """The delta a chunk makes; None when all of it is held back."""
        text = self._calls.feed(chunk.text) if self._calls is not None else chunk.text
        if not text and not chunk.logprobs:
            return None
        return Delta(text, chunk.logprobs)

    def finish(self) -> Delta | None:
        """What was held back, and the calls in it; None when nothing was."""
        if self._calls is None:
            return None
        rest, calls = self._calls.finish()
        if not rest and not calls:
            return None
        return Delta(rest, (), tuple(calls), closing=True)


class Renderer(Protocol):
    """One API's shape of an answer."""

    def opening(self) -> Iterable[Line]:
        """Lines a stream opens with, once the runner has taken the request."""
        ...

    def delta(self, delta: Delta) -> Iterable[Line]:
        """The lines of one piece of a streamed answer."""
        ...

    def closing(self, done: Done, calls: list[ToolCall]) -> Iterable[Line]:
        """The lines that end a stream: reason, counts and timings (`calls`: all found)."""
        ...

    def whole(self, answer: Answer, done: Done) -> Line:
        """The one body of an answer that was not streamed."""
        ...


async def render(
    events: AsyncIterator[Event], renderer: Renderer, stream: bool, tool_names: set[str] | None
) -> AsyncGenerator[Line, None]:
    """The API's lines for a runner's events (one line when not streaming).

    Nothing is yielded before the runner's first event, so an error it reports before any output
    still gets its own status. Closing the generator closes `events` (which cancels the request).
    """
    assembler = Assembler(tool_names)
    answer = Answer()
    calls: list[ToolCall] = []
    opened = False
    try:
        async for event in events:
            if stream and not opened:
                opened = True
                for line in renderer.opening():
                    yield line
            if isinstance(event, Chunk):
                piece = assembler.feed(event)
            elif isinstance(event, Done):
                piece = assembler.finish()
            else:
                continue  # Accepted: only a direct stream acts on it
            if piece is not None:
                calls.extend(piece.tool_calls)
                if stream:
                    for line in renderer.delta(piece):
                        yield line
                else:
                    answer.add(piece)
            if isinstance(event, Done):
                if stream:
                    for line in renderer.closing(event, calls):
                        yield line
                else:
                    yield renderer.whole(answer, event)
                return
        raise OllaError("the model runner ended the answer without a final line")
    finally:
        if isinstance(events, AsyncGenerator):
            await events.aclose()
