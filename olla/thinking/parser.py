"""TEMPORARY stand-in until the thinking-parsers branch lands (replaced by it)."""

from __future__ import annotations


class TagParser:
    def __init__(self, opening: str, closing: str, inside: bool = False) -> None:
        self.opening, self.closing = opening, closing
        self._held = ""
        self._state = "thinking" if inside else "start"

    def feed(self, text: str) -> tuple[str, str]:
        self._held += text
        thinking = content = ""
        while True:
            if self._state == "start":
                stripped = self._held.lstrip()
                if stripped.startswith(self.opening):
                    self._held = stripped[len(self.opening) :].lstrip()
                    self._state = "thinking"
                    continue
                if not stripped or self.opening.startswith(stripped):
                    return thinking, content
                self._state = "done"
                continue
            if self._state == "thinking":
                at = self._held.find(self.closing)
                if at >= 0:
                    thinking += self._held[:at]
                    self._held = self._held[at + len(self.closing) :].lstrip()
                    self._state = "done"
                    continue
                keep = _overlap(self._held, self.closing)
                thinking += self._held[: len(self._held) - keep]
                self._held = self._held[len(self._held) - keep :]
                return thinking, content
            content += self._held
            self._held = ""
            return thinking, content

    def finish(self) -> tuple[str, str]:
        held, self._held = self._held, ""
        return (held, "") if self._state == "thinking" else ("", held)


def _overlap(text: str, tag: str) -> int:
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
