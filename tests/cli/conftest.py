"""Fixtures of the CLI tests: the daemon's environment with the default model, and terminals."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.terminal import Terminal, olla
from tests.conftest import MODELFILE, Daemon


@pytest.fixture
def chat_env(daemon: Daemon, smollm2_gguf: Path, tmp_path: Path) -> dict[str, str]:
    """The daemon's CLI environment with smollm2:135m created and a fresh home for history."""
    created = olla(daemon, "create", "smollm2:135m", "-f", str(MODELFILE))
    assert created.returncode == 0, created.stderr
    return {**daemon.env, "HOME": str(tmp_path / "home"), "TERM": "xterm"}


@pytest.fixture
def terminals() -> Iterator[Callable[..., Terminal]]:
    """Start `olla ARGS...` on pseudo-terminals; each is killed and closed after the test."""
    opened: list[Terminal] = []

    def start(*args: str, env: dict[str, str], columns: int = 200) -> Terminal:
        opened.append(Terminal([sys.executable, "-m", "olla", *args], env, columns))
        return opened[-1]

    yield start
    for terminal in opened:
        terminal.close()
