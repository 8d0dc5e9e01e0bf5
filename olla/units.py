"""Parsing and formatting of durations and byte sizes, as Ollama's users write them.

Durations follow Go's `time.ParseDuration` ("300ms", "10m", "1h30m") plus bare numbers as seconds,
which is what `keep_alive` accepts in Ollama. Sizes accept bytes, "512MB", "8GiB".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = re.compile(r"^[+-]?(\d+(?:\.\d*)?|\.\d+)$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"k": 1, "m": 2, "g": 3, "t": 4}


def parse_duration(value: str | int | float) -> float:
    """Seconds from `"5m"`, `"1h30m"`, `"-1"`, `300` or `"300"`; negative means forever.

    Raises ValueError with a message that shows the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError(f'invalid duration {value!r}: use e.g. 300, "5m", "1h30m" or -1')
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"invalid duration {value}")
        return float(value)
    text = value.strip()
    if _NUMBER.match(text):
        return float(text)
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ValueError(
            f'invalid duration "{value}": use seconds (300), Go-style units ("10m", "1h30m", '
            '"500ms") or a negative number to keep forever'
        )
    return sign * total


def format_duration(seconds: float) -> str:
    """Go-style text for a duration: 300 → "5m0s", -1 → "forever"."""
    if seconds < 0:
        return "forever"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    frac = seconds - whole
    sec_text = f"{secs + frac:g}s" if frac else f"{secs}s"
    if hours:
        return f"{hours}h{minutes}m{sec_text}"
    if minutes:
        return f"{minutes}m{sec_text}"
    return sec_text


def parse_size(value: str | int) -> int:
    """Bytes from `1048576`, `"512MB"` (decimal) or `"8GiB"` (binary). Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value}: must not be negative")
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f'invalid size "{value}": use bytes (1048576) or units ("512MB", "8GiB")')
    number = float(match.group(1))
    unit = (match.group(2) or "b").lower()
    if unit == "b":
        return int(number)
    base = 1024 if "i" in unit else 1000
    return int(number * base ** _SIZE_UNITS[unit[0]])


def format_size(num_bytes: int) -> str:
    """Human size as `olla list` shows it, in decimal units like Ollama: "92 MB", "4.7 GB"."""
    value = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def format_ago(seconds: float) -> str:
    """How long ago, as `olla list` shows it: "2 minutes ago", "About an hour ago"."""
    return f"{_span(seconds)} ago"


def format_until(seconds: float) -> str:
    """How long from now, as `olla ps` shows it: "4 minutes from now"."""
    return f"{_span(seconds)} from now"


def _span(seconds: float) -> str:
    steps = (
        (1, "Less than a second"),
        (2, "1 second"),
        (60, "{} seconds", 1),
        (120, "About a minute"),
        (3600, "{} minutes", 60),
        (7200, "About an hour"),
        (86400, "{} hours", 3600),
        (172800, "1 day"),
        (604800, "{} days", 86400),
        (1209600, "1 week"),
        (2629800, "{} weeks", 604800),
        (5259600, "1 month"),
        (31557600, "{} months", 2629800),
        (63115200, "1 year"),
    )
    for step in steps:
        if seconds < step[0]:
            return step[1].format(int(seconds // step[2])) if len(step) == 3 else step[1]
    return f"{int(seconds // 31557600)} years"


@dataclass(frozen=True)
class Budget:
    """How much of a device olla may use: a fixed number of bytes, or a share of its total."""

    bytes: int | None = None
    share: float | None = None
    text: str = field(default="", compare=False)  # as the user wrote it, for messages

    @classmethod
    def parse(cls, value: str | int | Budget) -> Budget:
        """`8589934592`, `"8GiB"`, `"512MB"` or `"75%"`; ValueError says the accepted forms."""
        if isinstance(value, Budget):
            return value
        text = str(value).strip()
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError:
                percent = -1.0
            if not 0 < percent <= 100:
                raise ValueError(f'invalid budget "{value}": a percentage is from 1% to 100%')
            return cls(share=percent / 100, text=text)
        try:
            return cls(bytes=parse_size(value if isinstance(value, int) else text), text=text)
        except ValueError:
            raise ValueError(
                f'invalid budget "{value}": use bytes, a size ("8GiB", "512MB") or a share ("75%")'
            ) from None

    def of(self, total: int) -> int:
        """The budget in bytes on a device of `total` bytes (a fixed size is capped at it)."""
        if self.share is not None:
            return int(total * self.share)
        return min(self.bytes or 0, total)

    def describe(self, total: int) -> str:
        """`75% of 16 GB` or `8GiB`, for messages."""
        if self.share is not None:
            return f"{self.text or f'{self.share * 100:g}%'} of {format_size(total)}"
        return self.text or format_size(self.bytes or 0)

    def __str__(self) -> str:
        return self.text or (
            f"{self.share * 100:g}%" if self.share else format_size(self.bytes or 0)
        )
