"""Streaming detokenization: whole UTF-8 characters, and no text that may begin a stop string."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence


class Detokenizer:
    """Turns a sequence's tokens into text as it grows, honouring stop strings."""

    def __init__(self, token_bytes: Callable[[int], bytes], stop: Sequence[str]) -> None:
        self._token_bytes = token_bytes
        self._stops = tuple(stop)
        # replace: bytes that can never form a character become U+FFFD once that is certain
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""  # released text's tail that could be the start of a stop string
        self.stopped = False

    def add(self, token: int) -> str:
        """Text that can be released now that `token` was generated."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(self._token_bytes(token))
        if not self._stops:
            self._held = ""
            return text
        cut = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = self._longest_stop_prefix_suffix(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of some stop string."""
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(text)), best, -1):
                if stop.startswith(text[len(text) - k :]):
                    best = k
                    break
        return best

    def finish(self) -> str:
        """Everything still held back, when the sequence ends for another reason."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text
