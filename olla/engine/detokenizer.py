"""Streaming detokenization: whole UTF-8 characters, and no text that may begin a stop string."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence


class Detokenizer:
    """Turns a sequence's tokens into text as they come, honouring stop strings.

    Each stop string has a Knuth-Morris-Pratt matcher whose state is the longest tail of the
    text that begins that stop string; the longest such tail is held back. So each token costs
    O(its characters x stop strings), whatever the length of the text so far.
    """

    def __init__(self, token_bytes: Callable[[int], bytes], stop: Sequence[str]) -> None:
        self._token_bytes = token_bytes
        self._stops = tuple(s for s in stop if s)
        self._fallbacks = [_fallbacks(s) for s in self._stops]
        self._states = [0] * len(self._stops)  # characters of each stop string matched so far
        # replace: bytes that can never form a character become U+FFFD once that is certain
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""
        self.stopped = False
        self.matched = ""  # the stop string that stopped the text, once one has

    def add(self, token: int) -> str:
        """The text that can be released now that `token` was generated."""
        if self.stopped:
            return ""
        new = self._decoder.decode(self._token_bytes(token))
        if not self._stops:
            return new
        text = self._held + new
        cut = self._advance(new, len(self._held))
        if cut is not None:
            self.stopped, self._held = True, ""
            return text[:cut]
        keep = max(self._states)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def finish(self) -> str:
        """Everything held back, when the sequence ends for another reason than a stop string."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _advance(self, new: str, offset: int) -> int | None:
        """Feed `new` (which starts at `offset` of held + new) to every matcher; return where
        the earliest complete stop string starts, if any ended inside `new`."""
        cut: int | None = None
        for k, stop in enumerate(self._stops):
            fallback, state = self._fallbacks[k], self._states[k]
            for j, char in enumerate(new):
                while state and stop[state] != char:
                    state = fallback[state - 1]
                if stop[state] == char:
                    state += 1
                if state == len(stop):  # the first occurrence of this stop string
                    start = offset + j + 1 - state
                    if cut is None or start < cut:
                        cut, self.matched = start, stop
                    break
            self._states[k] = state
        return cut


def _fallbacks(pattern: str) -> list[int]:
    """KMP failure function: for each prefix, the longest proper prefix that is also a suffix."""
    table = [0] * len(pattern)
    k = 0
    for i in range(1, len(pattern)):
        while k and pattern[i] != pattern[k]:
            k = table[k - 1]
        if pattern[i] == pattern[k]:
            k += 1
        table[i] = k
    return table
