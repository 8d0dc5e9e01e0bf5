"""The runner's events as neutral pieces of an answer, and the loop every API renders them with.

`Assembler` turns text chunks into `Delta`s: the model's reasoning apart from its answer
(`olla.stream.reasoning`), and tool calls apart from content (text that may be a call is held
back; a call is given out as soon as it is complete). `render` drives a `Renderer` over a
runner's events: streaming, each delta becomes the API's lines as it comes; otherwise the deltas
are gathered into one `Answer` and rendered once. A new API is a new `Renderer`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from olla.errors import OllaError
from olla.stream.reasoning import ReasoningFormat, Split, Splitter
from olla.thinking.harmony import HarmonyCall
from olla.tool_calls import CallStream, ToolCall
from olla.wire.messages import Chunk, Done, Event, Logprob

Line = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of an answer: text, reasoning, the tokens' log-probabilities, calls completed."""

    text: str = ""
    logprobs: tuple[Logprob, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: str = ""


@dataclass
class Answer:
    """A whole answer, for a client that did not ask for a stream."""

    parts: list[str] = field(default_factory=list)
    thinking_parts: list[str] = field(default_factory=list)
    logprobs: list[Logprob] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def thinking(self) -> str:
        return "".join(self.thinking_parts)

    def add(self, delta: Delta) -> None:
        self.parts.append(delta.text)
        self.thinking_parts.append(delta.thinking)
        self.logprobs.extend(delta.logprobs)
        self.tool_calls.extend(delta.tool_calls)


class Assembler:
    """Deltas from one answer's chunks. `tool_names`: the calls to look for (none: text only);
    `reasoning`: how the model marks its reasoning (None: it is all answer)."""

    def __init__(
        self, tool_names: set[str] | None = None, reasoning: ReasoningFormat | None = None
    ) -> None:
        self._names = tool_names or set()
        self._calls = CallStream(self._names) if tool_names else None
        self._splitter = Splitter(reasoning) if reasoning is not None else None
        self._count = 0  # calls given out so far: the next one's index

    def feed(self, chunk: Chunk) -> Delta | None:
        """The delta a chunk makes; None when all of it is held back."""
        split = self._splitter.feed(chunk.text) if self._splitter else Split(content=chunk.text)
        text, calls = self._content(split)
        return self._delta(text, calls, split.thinking, chunk.logprobs)

    def finish(self) -> Delta | None:
        """What was held back, and the calls in it; None when nothing was."""
        split = self._splitter.finish() if self._splitter else Split()
        text, calls = self._content(split)
        if self._calls is not None:
            rest, more = self._calls.finish()
            text, calls = text + rest, [*calls, *self._numbered(more)]
        return self._delta(text, calls, split.thinking)

    def _content(self, split: Split) -> tuple[str, list[ToolCall]]:
        text, calls = split.content, [self._harmony_call(c) for c in split.calls]
        if self._calls is not None:
            text, found = self._calls.feed(text)
            calls += found
        return text, self._numbered(calls)

    def _harmony_call(self, call: HarmonyCall) -> ToolCall:
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):  # kept as it came rather than lost
            arguments = {"arguments": call.arguments}
        return ToolCall(call.name, arguments)

    def _numbered(self, calls: list[ToolCall]) -> list[ToolCall]:
        numbered = [replace(call, index=self._count + i) for i, call in enumerate(calls)]
        self._count += len(numbered)
        return numbered

    @staticmethod
    def _delta(
        text: str, calls: list[ToolCall], thinking: str, logprobs: tuple[Logprob, ...] = ()
    ) -> Delta | None:
        if not text and not calls and not thinking and not logprobs:
            return None
        return Delta(text, logprobs, tuple(calls), thinking)


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
    events: AsyncIterator[Event],
    renderer: Renderer,
    stream: bool,
    tool_names: set[str] | None,
    reasoning: ReasoningFormat | None = None,
) -> AsyncGenerator[Line, None]:
    """The API's lines for a runner's events (one line when not streaming).

    Nothing is yielded before the runner's first event, so an error it reports before any output
    still gets its own status. Closing the generator closes `events` (which cancels the request).
    """
    assembler = Assembler(tool_names, reasoning)
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
