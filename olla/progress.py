"""`olla pull`'s output: progress bars with speed and ETA on a terminal, plain lines elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from olla.units import format_size

_BAR = 25


@dataclass
class PullProgress:
    """Renders Ollama's pull status lines; `write` gets text without a newline."""

    write: Callable[[str], None]
    tty: bool
    clock: Callable[[], float] = time.monotonic
    _status: str = ""
    _started: dict[str, tuple[float, int]] = field(default_factory=dict)  # status -> (t, bytes)
    _finished: set[str] = field(default_factory=set)

    def show(self, line: dict[str, Any]) -> None:
        status = str(line.get("status", ""))
        if "completed" not in line or "total" not in line:
            self._end_line()
            if status != self._status:
                self.write(status + "\n")
            self._status = status
            return
        done, total = int(line["completed"] or 0), int(line["total"] or 0)
        now = self.clock()
        first_time, first_bytes = self._started.setdefault(status, (now, done))
        if self.tty:
            if status != self._status:
                self._end_line()
            self.write("\r" + self._bar(status, done, total, now - first_time, done - first_bytes))
            self._status = status
        elif status not in self._finished and (status != self._status or done >= total):
            if done >= total:
                self._finished.add(status)
                self.write(f"{status}: {format_size(total)} done\n")
            else:
                self.write(f"{status}: {format_size(total)}\n")
            self._status = status

    def _bar(self, status: str, done: int, total: int, seconds: float, fetched: int) -> str:
        share = done / total if total else 1.0
        filled = int(share * _BAR)
        bar = "█" * filled + " " * (_BAR - filled)
        text = f"{status}: {share:4.0%} ▕{bar}▏ {format_size(done)}/{format_size(total)}"
        if seconds > 0.5 and fetched > 0 and done < total:
            speed = fetched / seconds
            text += f"  {format_size(int(speed))}/s  {_eta((total - done) / speed)}"
        return text + "\x1b[K"  # clear what a longer line left behind

    def _end_line(self) -> None:
        if self.tty and self._status and self._status in self._started:
            self.write("\n")
            self._status = ""

    def close(self) -> None:
        """End the last bar's line."""
        self._end_line()


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60}s"
    return f"{seconds}s"
