"""`olla run`'s word wrap: a streamed answer broken into lines at spaces, as it arrives.

As `ollama run` wraps on a terminal: a line holds at most the terminal's width less 5 columns
(Ollama's margin), a word that would cross it starts the next line, and a word too long for a
line of its own is cut. Unlike Ollama, which prints each character and then moves the cursor
back over a word that must go down a line, a word is held back until it is whole (the next
space or newline), so what is written is plain text: the same on a terminal and in a log of it.
Wide characters (CJK) count two columns and are words by themselves, as in Ollama.
"""

from __future__ import annotations

import unicodedata

MARGIN = 5  # columns left free at the right, as Ollama leaves them
MIN_COLUMNS = 10  # narrower terminals are not wrapped (Ollama's limit)


def char_width(ch: str) -> int:
    """Columns a character takes on a terminal: 0 (combining), 1, or 2 (wide)."""
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def wrap_width(columns: int) -> int | None:
    """The line width for a terminal `columns` wide; None: too narrow to wrap."""
    return columns - MARGIN if columns >= MIN_COLUMNS else None


class WordWrap:
    """Breaks text fed piece by piece into lines of at most `width` columns.

    `feed` returns what can be written now; the word being typed waits until it ends or
    `flush` is called (the answer ended, or something else is written in between).
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self._column = 0  # columns written on the current line, the waiting word excluded
        self._word = ""
        self._word_width = 0

    def feed(self, text: str) -> str:
        """The text to write for `text`: whole words, with a newline where a line is full."""
        return "".join(self._char(ch) for ch in text)

    def flush(self) -> str:
        """The waiting word, to be written now."""
        word, self._word = self._word, ""
        self._column += self._word_width
        self._word_width = 0
        return word

    def reset(self) -> None:
        """The cursor is at the start of a line (something else ended one)."""
        self.flush()
        self._column = 0

    def _char(self, ch: str) -> str:
        if ch in "\n\r":
            word = self.flush()
            self._column = 0
            return word + ch
        if ch in " \t":
            word = self.flush()
            if self._column + 1 > self.width:  # a space at a full line's end becomes its break
                self._column = 0
                return word + "\n"
            self._column += 1
            return word + ch
        width = char_width(ch)
        if width == 2:  # a word by itself
            word = self.flush()
            return word + self._place(ch, width)
        if self._column + self._word_width + width <= self.width:
            self._word += ch
            self._word_width += width
            return ""
        if self._column == 0:  # the word fills a whole line: cut it
            out = self.flush() + "\n"
            self._column = 0
        else:  # the word goes down to the next line
            out = "\n"
            self._column = 0
        self._word += ch
        self._word_width += width
        return out

    def _place(self, ch: str, width: int) -> str:
        """Write a wide character now, on the next line if it does not fit on this one."""
        out = ""
        if self._column + width > self.width:
            out, self._column = "\n", 0
        self._column += width
        return out + ch
