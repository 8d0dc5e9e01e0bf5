"""gpt-oss's "harmony" format, split as it streams: the analysis channel is reasoning, the final
channel is the answer, and a message to a function (`to=functions.NAME`) is a tool call.

A message is `<|start|>HEADER<|message|>BODY` ended by `<|end|>`, `<|return|>` or `<|call|>`; the
header holds the role, `<|channel|>NAME`, a recipient `to=...` and a `<|constrain|>` type. As
Ollama's harmony handler: analysis is thinking and final is content; a message with a recipient on
the analysis or commentary channel is a call (its name without `functions.`), one without is content
(a preamble); text between messages is dropped. The special tokens never show, and the start of one
split over chunks is held back. Beyond Ollama, which stops generating at `<|call|>` and parses the
call at the end of the answer: each call is given out as soon as its message ends, and a message
begun with `<|start|>` or `<|channel|>` before the last one ended ends that one.

A prompt that ends inside a message (Ollama's prefill of a last assistant message) is followed by
feeding the opening the prompt wrote, e.g. `feed("<|start|>assistant<|channel|>final<|message|>")`,
which gives nothing out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from olla.thinking.parser import held_back

__all__ = ["HarmonyCall", "HarmonyParser", "HarmonyPiece", "harmony_names"]

log = logging.getLogger(__name__)

START, CHANNEL, MESSAGE, CONSTRAIN = "<|start|>", "<|channel|>", "<|message|>", "<|constrain|>"
ENDS = ("<|end|>", "<|return|>", "<|call|>")
SPECIAL = (START, CHANNEL, MESSAGE, CONSTRAIN, *ENDS)
_SPECIAL = re.compile("|".join(re.escape(token) for token in SPECIAL))
BUILTIN_TOOLS = frozenset({"browser.search", "browser.open", "browser.find", "python"})


@dataclass(frozen=True, slots=True)
class HarmonyCall:
    """A call of a function the model wrote on the commentary channel."""

    name: str  # the function, from `to=functions.NAME`
    arguments: str  # the JSON text as the model wrote it


@dataclass(frozen=True, slots=True)
class HarmonyPiece:
    """What a chunk of harmony output adds to the answer."""

    thinking: str = ""  # the analysis channel
    content: str = ""  # the final channel (and commentary without a recipient)
    calls: tuple[HarmonyCall, ...] = ()  # each as soon as it is complete


class _In(Enum):
    BETWEEN = 1  # between messages: text is dropped
    HEADER = 2
    THINKING = 3
    CONTENT = 4
    CALL = 5


class HarmonyParser:
    """gpt-oss's output split into thinking, content and calls as it arrives.

    `inside`: the prompt ended with `<|start|>assistant`, so the model begins in a header (Ollama
    always assumes so, and its gpt-oss templates always end the prompt that way).
    """

    def __init__(self, inside: bool = False) -> None:
        self._held = ""
        self._in = _In.HEADER if inside else _In.BETWEEN
        self._header = "assistant" if inside else ""
        self._recipient = ""
        self._arguments = ""

    def feed(self, text: str) -> HarmonyPiece:
        """Thinking, content and the calls completed by `text`, with what was held before it."""
        held = self._held + text
        keep = held_back(held, *SPECIAL)
        self._held = held[len(held) - keep :]
        return self._scan(held[: len(held) - keep])

    def finish(self) -> HarmonyPiece:
        """What was held at the end: the rest of a message (a call ended by the end of output)."""
        text, self._held = self._held, ""
        piece = self._scan(text)
        if self._in is _In.CALL:
            call = self._end_message()
            return HarmonyPiece(piece.thinking, piece.content, (*piece.calls, *call))
        if self._in is _In.HEADER and self._header.strip():
            log.debug("harmony: output ended in a message header", extra={"header": self._header})
        self._in = _In.BETWEEN
        return piece

    def _scan(self, text: str) -> HarmonyPiece:
        """Text with no partial special token at its end, token by token."""
        thinking: list[str] = []
        content: list[str] = []
        calls: list[HarmonyCall] = []
        at = 0
        for match in _SPECIAL.finditer(text):
            self._payload(text[at : match.start()], thinking, content)
            calls.extend(self._token(match.group()))
            at = match.end()
        self._payload(text[at:], thinking, content)
        return HarmonyPiece("".join(thinking), "".join(content), tuple(calls))

    def _payload(self, text: str, thinking: list[str], content: list[str]) -> None:
        if not text:
            return
        if self._in is _In.HEADER:
            self._header += text
        elif self._in is _In.THINKING:
            thinking.append(text)
        elif self._in is _In.CONTENT:
            content.append(text)
        elif self._in is _In.CALL:
            self._arguments += text
        else:
            log.debug("harmony: text outside a message dropped", extra={"text": text})

    def _token(self, token: str) -> tuple[HarmonyCall, ...]:
        """A special token moves the parser on; the call it completes, if any."""
        if self._in is _In.HEADER:
            if token == MESSAGE:
                self._open_body()
            elif token == START:
                self._header = ""
            elif token in ENDS:  # a message with no body
                self._in = _In.BETWEEN
            else:
                self._header += token  # <|channel|>, <|constrain|>: read by _open_body
            return ()
        if token == MESSAGE or token == CONSTRAIN:
            return ()  # out of place in a body or between messages: never shown
        call = self._end_message() if self._in is not _In.BETWEEN else ()
        if token == START:
            self._in, self._header = _In.HEADER, ""
        elif token == CHANNEL:  # `<|start|>assistant` left out
            self._in, self._header = _In.HEADER, "assistant" + CHANNEL
        return call

    def _open_body(self) -> None:
        channel, recipient = _parse_header(self._header)
        self._header = ""
        if recipient and channel in ("analysis", "commentary", ""):
            self._in, self._recipient, self._arguments = _In.CALL, recipient, ""
        elif channel == "analysis":
            self._in = _In.THINKING
        else:  # final, commentary to no one (a preamble), or a channel Ollama does not know
            self._in = _In.CONTENT

    def _end_message(self) -> tuple[HarmonyCall, ...]:
        was, self._in = self._in, _In.BETWEEN
        if was is not _In.CALL:
            return ()
        name = self._recipient.removeprefix("functions.")
        return (HarmonyCall(name, self._arguments),)


def _parse_header(header: str) -> tuple[str, str]:
    """(channel, recipient) of a header such as `assistant<|channel|>commentary to=functions.f
    <|constrain|>json`; the recipient may come before or after the channel."""
    channel = recipient = ""
    words = header.replace(CONSTRAIN, " " + CONSTRAIN).replace(CHANNEL, " " + CHANNEL).split()
    for word in words:
        if word.startswith(CHANNEL) and not channel:
            channel = word[len(CHANNEL) :]
        elif word.startswith("to=") and not recipient:
            recipient = word[len("to=") :]
    return channel, recipient


def harmony_names(names: Iterable[str]) -> dict[str, str]:
    """Each tool name as gpt-oss's templates may write it (a TypeScript identifier), as Ollama
    renames them: ` `, `-` and `.` become `_`, other characters but letters, digits, `_` and `$`
    go, a leading digit gets a `_`, repeats get `_2`, `_3`...; gpt-oss's built-in tools keep theirs.

    Render the tools under these names and map a call's name back with the inverse mapping.
    """
    renamed: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        if name in renamed:
            continue
        candidate = _identifier(name)
        unique, count = candidate, 2
        while unique in taken:
            unique, count = f"{candidate}_{count}", count + 1
        renamed[name] = name if name in BUILTIN_TOOLS else unique
        taken.add(renamed[name])
    return renamed


def _identifier(name: str) -> str:
    kept = "".join(
        "_" if c in " -." else c for c in name if c in " -._$" or c.isalpha() or c.isdecimal()
    )
    if not kept:
        return "unnamed"
    return "_" + kept if "0" <= kept[0] <= "9" else kept
