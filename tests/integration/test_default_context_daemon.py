"""The default num_ctx through a real daemon on this CPU-only machine: 4096 (SmolLM2-135M is
trained for 8192), shown by /api/ps, and a model loaded with it is never reloaded for it."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Daemon
from tests.daemon_helpers import api, chat_lines, create_tiny, runner_processes


async def test_the_default_context_shows_in_ps_and_does_not_reload(
    daemon: Daemon, smollm2_gguf: Path
) -> None:
    await create_tiny(daemon, smollm2_gguf)
    await chat_lines(daemon, "Hi", {"num_predict": 1})
    (model,) = (await api(daemon, "GET", "/api/ps"))["models"]
    assert model["context_length"] == 4096
    (runner,) = runner_processes(daemon)
    await chat_lines(daemon, "Hi", {"num_predict": 1})  # the default again
    await chat_lines(daemon, "Hi", {"num_predict": 1, "num_ctx": 4096})  # what it runs with
    assert [p.pid for p in runner_processes(daemon)] == [runner.pid]
    (model,) = (await api(daemon, "GET", "/api/ps"))["models"]
    assert model["context_length"] == 4096
