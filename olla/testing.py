"""Helpers for tests and benchmarks: a free loopback port and an `olla serve` process.

Used by tests/conftest.py and by every script under scripts/ that starts a server, so that there
is one way to pick a port, start a daemon, wait until it answers, read its log and stop it. It
raises olla's own errors, never a test framework's: the tests' fixture turns them into failures
with the daemon's log, a script prints them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from olla.errors import DaemonUnavailable

OLLA_SERVE = (sys.executable, "-m", "olla", "serve")  # works without the console script too


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` now (another process may still take it before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def daemon_env(workdir: Path, host: str, **settings: str) -> dict[str, str]:
    """This process's environment for a private daemon on `host`, with `settings` (OLLA_*) added.

    The caller's OLLA_* variables are dropped, and the store (OLLA_MODELS), API keys (OLLA_HOME)
    and config.yaml (XDG_CONFIG_HOME) are under `workdir`, so nothing of the user's reaches it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLA_")}
    env.update(
        OLLA_HOST=host,
        OLLA_MODELS=str(workdir / "models"),
        OLLA_HOME=str(workdir / "home"),
        XDG_CONFIG_HOME=str(workdir / "config"),
    )
    env.update(settings)
    return env


@dataclass
class Daemon:
    """A real `olla serve` process (or, given `command`, another HTTP server) on `host`.

    `start` launches it with `env` and waits until `GET ready_path` answers 200; everything it
    writes goes to `log_path`. With `own_group`, it runs in a process group of its own: a Ctrl-C
    meant for the caller does not reach it, and `shutdown` also ends what it started (runners).
    """

    host: str  # where to connect: "127.0.0.1:PORT"
    env: dict[str, str] = field(repr=False)  # long: left out of tracebacks
    log_path: Path
    command: Sequence[str] = OLLA_SERVE
    ready_path: str = "/"
    own_group: bool = False
    name: str = "olla serve"
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    @property
    def models(self) -> Path:
        """Its model store (an olla daemon's OLLA_MODELS)."""
        return Path(self.env["OLLA_MODELS"])

    def launch(self) -> None:
        """Start the process and return at once (`start` also waits until it answers)."""
        with self.log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                list(self.command),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_group,
            )

    def start(self, timeout: float = 30.0) -> None:
        """Launch it and wait until it answers; DaemonUnavailable if it exits or never does."""
        self.launch()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0, interval: float = 0.05) -> None:
        """Poll `ready` every `interval` seconds until it holds or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise DaemonUnavailable(f"{self.name} not ready after {timeout:.0f}s")
            time.sleep(interval)

    def ready(self) -> bool:
        """Whether it answers `GET ready_path` with 200 now; DaemonUnavailable once it exited."""
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise DaemonUnavailable(f"{self.name} exited with status {code}")
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
        try:
            with direct.open(self.base_url + self.ready_path, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def log(self) -> str:
        """Everything it has written so far ("" before it started)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send `sig`; the exit code, or subprocess.TimeoutExpired if it outlasts `timeout`."""
        if self.process is None:
            raise DaemonUnavailable(f"{self.name} was never started")
        if self.process.poll() is None:
            self._signal(self.process, sig)
        return self.process.wait(timeout=timeout)

    def shutdown(self, grace: float = 10.0) -> int | None:
        """Stop it whatever it takes, for clean-ups: SIGTERM, SIGKILL after `grace` seconds.

        With `own_group`, both go to the whole group, and whatever of the group outlives its
        leader (an olla daemon's runners) is killed too. Returns the exit code, None if it never
        started or would not die.
        """
        process, self.process = self.process, None
        if process is None:
            return None
        code = None
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            self._signal(process, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = process.wait(timeout=wait)
                break
        if self.own_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        return code

    def _signal(self, process: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.own_group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
