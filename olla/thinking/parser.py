"""Reasoning written between an opening and a closing tag (`<think>...</think>`), split from the
answer as the text arrives, the way Ollama's `thinking.Parser` splits it.

Ollama's rules, kept: the reasoning counts only when the answer begins with the opening tag (after
whitespace); text before any opening tag means the model skipped thinking, and everything is
content as it comes. Whitespace right after either tag is eaten. After the closing tag all is
content, a second opening tag included. What may still become a tag is held back, so a tag split
over chunks never shows. Beyond Ollama: `finish` gives back what was held (Ollama drops it), and a
model that was started inside its reasoning and writes the opening tag again (Qwen3 does) has that
tag eaten, as Ollama's qwen3 parser does.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["TagParser", "held_back"]


class _State(Enum):
    LOOKING = 1  # nothing but whitespace or the start of the opening tag yet
    OPENED = 2  # after the opening tag: eating whitespace
    THINKING = 3
    CLOSED = 4  # after the closing tag: eating whitespace
    ANSWERING = 5


class TagParser:
    """Reasoning between an opening and a closing tag, split from the answer as text arrives.

    `inside`: the prompt already opened the tag, so the model starts inside its reasoning.
    """

    def __init__(self, opening: str, closing: str, inside: bool = False) -> None:
        if not opening or not closing:
            raise ValueError("a thinking tag cannot be empty")
        self.opening = opening
        self.closing = closing
        self.inside = inside
        self._state = _State.LOOKING
        self._held = ""

    def feed(self, text: str) -> tuple[str, str]:
        """(thinking, content) that are certain now, with what was held before `text`."""
        self._held += text
        thinking: list[str] = []
        content: list[str] = []
        while self._step(thinking, content):
            pass
        return "".join(thinking), "".join(content)

    def finish(self) -> tuple[str, str]:
        """(thinking, content) held back at the end of the answer: a tag that never completed."""
        held, self._held = self._held, ""
        if self._state is _State.THINKING:
            return held, ""
        if self._state is _State.LOOKING:
            # whitespace, or the beginning of an opening tag that never came
            return (held.lstrip(), "") if self.inside else ("", held)
        return "", ""  # nothing is held while answering, and eaten whitespace stays eaten

    def _step(self, thinking: list[str], content: list[str]) -> bool:
        """Move on as far as the held text allows; True when another step may move further."""
        state = self._state
        if state is _State.LOOKING:
            return self._look()
        if state is _State.OPENED or state is _State.CLOSED:
            rest = self._held.lstrip()
            if not rest:
                self._held = ""
                return False
            if state is _State.OPENED:
                self._held, self._state = rest, _State.THINKING
                return True
            self._held, self._state = "", _State.ANSWERING
            content.append(rest)
            return False
        if state is _State.THINKING:
            return self._think(thinking, content)
        content.append(self._held)
        self._held = ""
        return False

    def _look(self) -> bool:
        start = self._held.lstrip()
        if start.startswith(self.opening):
            self._held = start[len(self.opening) :]
            self._state = _State.OPENED
            return True
        if self.opening.startswith(start):
            return False  # whitespace, or part of the opening tag: wait for more
        if self.inside:  # reasoning from the first word; the whitespace before it is eaten
            self._held, self._state = start, _State.THINKING
        else:  # no opening tag first: the model skipped thinking, the text is the answer as is
            self._state = _State.ANSWERING
        return True

    def _think(self, thinking: list[str], content: list[str]) -> bool:
        held = self._held
        at = held.find(self.closing)
        if at >= 0:
            thinking.append(held[:at])
            self._held = held[at + len(self.closing) :]
            self._state = _State.CLOSED
            return True
        keep = held_back(held, self.closing)
        thinking.append(held[: len(held) - keep])
        self._held = held[len(held) - keep :]
        return False


def held_back(text: str, *tags: str) -> int:
    """The length of the longest end of `text` that begins one of `tags` (and may become it)."""
    longest = 0
    for tag in tags:
        for n in range(min(len(tag) - 1, len(text)), longest, -1):
            if tag.startswith(text[-n:]):
                longest = n
                break
    return longest
