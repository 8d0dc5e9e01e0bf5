"""Driving `olla` as a person does, for the CLI tests: a command on a pseudo-terminal (`Terminal`,
whose `expect` waits on the output with a deadline) and one-off commands against a daemon."""

from __future__ import annotations

import codecs
import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, wait_for

PROMPT = ">>> "
ANSWER_TIMEOUT = 120  # a cold model load plus a short answer on a slow 2-core machine


def olla(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "olla", *args],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=ANSWER_TIMEOUT,
    )


def show(daemon: Daemon, model: str) -> dict[str, Any]:
    request = urllib.request.Request(
        daemon.base_url + "/api/show", data=json.dumps({"model": model}).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def words(text: str) -> str:
    """The words of a text, one space apart: how an answer compares with what a terminal shows."""
    return " ".join(text.split())


def _take_terminal() -> None:
    """In the child, after setsid: make stdin (the pty) the controlling terminal, so that
    Ctrl-C typed into it becomes SIGINT for the child."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A command on a pseudo-terminal; `expect` polls its output until a deadline."""

    def __init__(self, args: list[str], env: dict[str, str], columns: int = 200) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        self.process = subprocess.Popen(
            args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
        os.close(slave)
        self.fd = master
        self.output = ""  # everything read so far, escape sequences and \r included
        self.seen = 0  # where the next expect starts looking
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def _read(self, timeout: float) -> int:
        """Append what the command wrote within `timeout`: the byte count, -1 once the pty
        is closed (EIO: the command and all its children are gone)."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return 0
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            return -1
        self.output += self._decoder.decode(data)  # keeps a character split across reads
        return len(data) or -1

    def expect(self, pattern: str, timeout: float = ANSWER_TIMEOUT) -> str:
        """Wait for `pattern` (a regex) after what earlier expects consumed; return the text
        from there up to the end of the match."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            match = regex.search(self.output, self.seen)
            if match:
                text, self.seen = self.output[self.seen : match.end()], match.end()
                return text
            if time.monotonic() > deadline or self._read(0.1) < 0:
                pytest.fail(f"no {pattern!r} within {timeout}s; got:\n{self.output[self.seen :]}")

    def reading_terminal(self) -> bool:
        """Whether the command sleeps in select() on the terminal, as readline does between
        keys (the asyncio loop sleeps in epoll instead). Unknown kernels: any sleep counts."""
        proc = Path(f"/proc/{self.process.pid}")
        try:
            wchan = (proc / "wchan").read_text()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        return wchan.startswith("poll_schedule_timeout") or (wchan in ("", "0") and state == "S")

    def interrupt_prompt(self) -> None:
        """Ctrl-C at the prompt, once readline waits in select(): CPython's readline loses a
        SIGINT that lands between printing the prompt and entering select()."""
        wait_for(self.reading_terminal, timeout=10, what="readline waiting for a key")
        self.send("\x03")

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def ask(self, line: str, timeout: float = ANSWER_TIMEOUT) -> str:
        """Type `line` and Enter; return everything up to the next prompt, without it."""
        self.send(line + "\r")
        return self.expect(re.escape(PROMPT), timeout)[: -len(PROMPT)]

    def wait(self, timeout: float = 30) -> int:
        """The exit status, once the command ended and everything it wrote was read."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        status = self.process.wait(timeout=1)
        while self._read(0.1) > 0:
            pass
        return status

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.fd)
