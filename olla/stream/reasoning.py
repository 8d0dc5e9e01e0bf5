"""A model's reasoning told apart from its answer as the text arrives (issue 24).

Two formats: reasoning between two tags (`<think>...</think>`: Qwen3, DeepSeek-R1...), and
gpt-oss's harmony, whose channels carry the reasoning (analysis), the answer (final) and tool
calls (commentary). The parsers are `olla.thinking`'s; this says which one a request needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from olla.thinking.harmony import HarmonyCall, HarmonyParser
from olla.thinking.parser import TagParser


@dataclass(frozen=True)
class ReasoningFormat:
    """How one request's output marks its reasoning.

    `inside`: the prompt opened the reasoning (the model starts in it). `shown`: False when the
    request asked for no reasoning but the format carries it anyway (harmony): it is dropped.
    """

    opening: str = ""
    closing: str = ""
    harmony: bool = False
    inside: bool = False
    shown: bool = True


@dataclass(frozen=True)
class Split:
    """A piece of output told apart: reasoning, answer, and harmony's calls."""

    thinking: str = ""
    content: str = ""
    calls: tuple[HarmonyCall, ...] = ()


class Splitter:
    """One answer's reasoning split from its content as text arrives."""

    def __init__(self, fmt: ReasoningFormat) -> None:
        self._shown = fmt.shown
        self._harmony = HarmonyParser(fmt.inside) if fmt.harmony else None
        self._tags = None if fmt.harmony else TagParser(fmt.opening, fmt.closing, fmt.inside)

    def feed(self, text: str) -> Split:
        """What `text` (with what was held back) makes certain now."""
        if self._harmony is not None:
            piece = self._harmony.feed(text)
            return self._split(piece.thinking, piece.content, piece.calls)
        assert self._tags is not None
        return self._split(*self._tags.feed(text))

    def finish(self) -> Split:
        """What was held back, at the end of the answer."""
        if self._harmony is not None:
            piece = self._harmony.finish()
            return self._split(piece.thinking, piece.content, piece.calls)
        assert self._tags is not None
        return self._split(*self._tags.finish())

    def _split(self, thinking: str, content: str, calls: tuple[HarmonyCall, ...] = ()) -> Split:
        return Split(thinking if self._shown else "", content, calls)
