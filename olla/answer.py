"""How `olla run` prints a streamed chat answer: the model's reasoning apart from its answer.

As `ollama run` shows it: the reasoning comes first, after a `Thinking...` line and dimmed,
then `...done thinking.` and a blank line before the answer. The dim and bold styling is for a
terminal only; piped or redirected, the same markers are written as plain text. Hidden
reasoning (`--hidethinking`) is still asked for and kept in the conversation, only not shown.
On a terminal both are wrapped at word boundaries to its width (`olla.wordwrap`), unless
`--nowordwrap` or `/set nowordwrap` says not to.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from olla.wordwrap import WordWrap, wrap_width

# Ollama's readline colours: a 256-colour grey, bold, and back to the terminal's default
GREY, BOLD, RESET = "\x1b[38;5;245m", "\x1b[1m", "\x1b[0m"
OPENING, CLOSING = "Thinking...\n", "...done thinking.\n\n"

Think = bool | str  # the request's `think`: on, off, or a level
# The levels as `ollama run` takes them (the daemon reads "max" as "high"), and the capability
# /api/show lists for a model that thinks. Spelled here, not imported from olla.registry, whose
# capabilities module loads numpy and gguf: 0.3 s more for every `olla` command.
LEVELS = ("low", "medium", "high", "max")
THINKING = "thinking"
# what `--think=VALUE` takes, and the `think` each stands for
THINK_VALUES: dict[str, Think] = {"true": True, "false": False} | {level: level for level in LEVELS}


@dataclass
class Answer:
    """What the model said: its answer and the reasoning before it (either may be empty)."""

    content: str = ""
    thinking: str = ""
    stats: dict[str, Any] = field(default_factory=dict)  # the last line: counts and durations

    def message(self) -> dict[str, str]:
        """The assistant message that carries this answer into the next request; the reasoning
        goes back too, for templates that show it (Ollama's CLI sends it as well)."""
        message = {"role": "assistant", "content": self.content}
        if self.thinking:
            message["thinking"] = self.thinking
        return message


class AnswerPrinter:
    """Writes an answer's pieces as they arrive and collects them into an `Answer`.

    `styled`: dim the reasoning and embolden its markers (a terminal); `hide_thinking`: collect
    the reasoning without writing it; `wrap`: break lines at word boundaries.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        styled: bool,
        hide_thinking: bool,
        wrap: WordWrap | None = None,
    ) -> None:
        self.answer = Answer()
        self._write = write
        self._styled = styled
        self._hide_thinking = hide_thinking
        self._wrap = wrap
        self._thinking_shown = False  # the opening marker is out, the closing one not yet
        self._at_line_start = True

    def add(self, message: Mapping[str, Any]) -> None:
        """One streamed line's `message`: its reasoning first, then its answer."""
        thinking, content = message.get("thinking") or "", message.get("content") or ""
        if thinking:
            self.answer.thinking += thinking
            if not self._hide_thinking:
                if not self._thinking_shown:
                    self._write(self._marker(OPENING) + (GREY if self._styled else ""))
                    self._thinking_shown, self._at_line_start = True, True
                self._text(thinking)
        if content:
            self.answer.content += content
            if self._thinking_shown:
                self._close_thinking()
            self._text(content)

    def finish(self, end: str) -> None:
        """The answer is complete: restore the colour if it ended in its reasoning, then `end`."""
        self._flush()
        if self._thinking_shown and self._styled:
            self._write(RESET)
        self._write(end)

    def interrupted(self) -> None:
        """An error or Ctrl-C cut the answer: restore the colour, end the line."""
        self._flush()
        if self._thinking_shown and self._styled:
            self._write(RESET)
        if not self._at_line_start:
            self._write("\n")

    def _close_thinking(self) -> None:
        self._flush()
        if not self._at_line_start:
            self._write("\n")
        self._write(self._marker(CLOSING))
        if self._wrap is not None:
            self._wrap.reset()
        self._thinking_shown, self._at_line_start = False, True

    def _marker(self, text: str) -> str:
        return GREY + BOLD + text + RESET if self._styled else text

    def _text(self, text: str) -> None:
        self._emit(self._wrap.feed(text) if self._wrap is not None else text)

    def _flush(self) -> None:
        """Write the word the wrap holds back, before anything else is written."""
        if self._wrap is not None:
            self._emit(self._wrap.flush())

    def _emit(self, text: str) -> None:
        if text:
            self._write(text)
            self._at_line_start = text.endswith("\n")


async def print_answer(
    lines: AsyncIterator[dict[str, Any]], printer: AnswerPrinter, end: str
) -> Answer:
    """Print a chat stream's lines as they arrive, then `end`; return the whole answer, with
    the last line's counts and durations in its `stats`."""
    try:
        async for line in lines:
            printer.add(line.get("message", {}))
            if line.get("done"):
                printer.answer.stats = line
    except BaseException:  # an error or Ctrl-C: leave the cursor at the start of a line
        printer.interrupted()
        raise
    printer.finish(end)
    return printer.answer


def write_out(text: str) -> None:
    """Write to stdout at once: a streamed answer is shown as it comes."""
    sys.stdout.write(text)
    sys.stdout.flush()


def terminal_printer(hide_thinking: bool, word_wrap: bool = False) -> AnswerPrinter:
    """A printer to stdout, styled when stdout is a terminal, and wrapped there if `word_wrap`."""
    return AnswerPrinter(write_out, sys.stdout.isatty(), hide_thinking, terminal_wrap(word_wrap))


def terminal_wrap(word_wrap: bool) -> WordWrap | None:
    """A word wrap to stdout's terminal width; None when stdout is not a terminal (piped output
    is never wrapped), when it is too narrow, or without `word_wrap`."""
    if not word_wrap or not sys.stdout.isatty():
        return None
    try:
        width = wrap_width(os.get_terminal_size(sys.stdout.fileno()).columns)
    except (OSError, ValueError):  # no size to be had
        return None
    return WordWrap(width) if width is not None else None
