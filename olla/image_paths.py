"""Paths to image files in a prompt's text, found as `ollama run` finds them, for `olla run`.

A path starts with `/`, `./`, `../` or `~/` (at the start of the text, after white space or
after a quote) and ends with an image extension (`.jpg`, `.jpeg`, `.png`, `.webp`, any case) at
the end of a word. In between it may hold spaces, escaped (`\\ `) or not, but no line break.
Text that looks like a path but names no file stays text: the caller's `is_file` decides. Of
the candidates ending at one extension, the longest that names a file wins, so that
`./my cat.png` (a file with a space) and `compare /tmp/x and ./cat.png` both find their file;
Ollama's single regex match would take `/tmp/x and ./cat.png` and miss the file.

Pure: the file system is asked only through `is_file`, and `~` expands to the `home` given.
POSIX paths only (olla's daemon and runners live on POSIX systems); Ollama also takes
`C:\\...` paths and `.wav` files, which olla has no use for.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # as Ollama's CLI takes them

_END = re.compile(r"\.(?:" + "|".join(IMAGE_EXTENSIONS) + r")\b", re.IGNORECASE)
_START = re.compile(r"""(?:^|(?<=[\s'"]))(?:~|\.\.?)?/""")
_ESCAPE = re.compile(r"\\(.)")  # a backslash takes the next character as it is, as in a shell
_QUOTES = "'\""


@dataclass(frozen=True)
class ImagePath:
    """A path found in a text: `path` as the file system takes it (escapes undone, `~`
    expanded); `start` and `end` where it was typed, its quotes included when it had them."""

    path: str
    start: int
    end: int


def normalize(typed: str, home: str) -> str:
    """The path a typed one names: backslash escapes undone (`\\ ` is a space), a leading `~/`
    replaced by `home`."""
    path = _ESCAPE.sub(r"\1", typed)
    return home + path[1:] if path.startswith("~/") else path


def find_image_paths(text: str, is_file: Callable[[str], bool], home: str) -> list[ImagePath]:
    """The paths to image files in `text`, in order; `is_file(path)`: whether a file is there."""
    starts = [m.start() for m in _START.finditer(text)]
    found: list[ImagePath] = []
    done = 0  # paths do not overlap: the next one starts after the last one found
    for ending in _END.finditer(text):
        end = ending.end()
        for start in (s for s in starts if done <= s < ending.start()):
            typed = text[start:end]
            if "\n" in typed or "\r" in typed or "\t" in typed:
                continue  # a path is typed on one line
            path = normalize(typed, home)
            if is_file(path):
                found.append(_quoted(text, ImagePath(path, start, end)))
                done = end
                break
    return found


def _quoted(text: str, found: ImagePath) -> ImagePath:
    """`found` widened to the quotes around it, when the same quote stands on both sides."""
    start, end = found.start, found.end
    if 0 < start and end < len(text) and text[start - 1] == text[end] and text[end] in _QUOTES:
        return ImagePath(found.path, start - 1, end + 1)
    return found


def remove_paths(text: str, found: list[ImagePath]) -> str:
    """`text` without the paths found in it (and their quotes), white space around it trimmed;
    the spaces on either side of a path stay, as Ollama leaves them."""
    kept, at = [], 0
    for p in found:
        kept.append(text[at : p.start])
        at = p.end
    kept.append(text[at:])
    return "".join(kept).strip()


def split_image_paths(
    text: str, is_file: Callable[[str], bool], home: str
) -> tuple[str, list[str]]:
    """The text without its image paths, and the paths (as the file system takes them)."""
    found = find_image_paths(text, is_file, home)
    return remove_paths(text, found), [p.path for p in found]
