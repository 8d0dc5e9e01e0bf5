"""`python -m olla.runner SPEC_JSON [HANDOFF_FD]`: load the model, then serve until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import socket
import sys

# isort: off
import olla.runner.native_order  # noqa: F401  # before numpy; see there
# isort: on

from olla.errors import OllaError
from olla.runner.build import build, load_projector
from olla.runner.serve import Runner
from olla.wire.spec import RunnerSpec

log = logging.getLogger("olla.runner")


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM us if the daemon dies, so no runner outlives it."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main(argv: list[str]) -> int:
    """Entry point: load the model from the spec, then serve until told to stop."""
    if len(argv) not in (2, 3):
        print(
            "usage: python -m olla.runner SPEC_JSON [HANDOFF_FD] (started by olla serve)",
            file=sys.stderr,
        )
        return 2
    spec = RunnerSpec.from_json(argv[1])
    handoff = socket.socket(fileno=int(argv[2])) if len(argv) == 3 else None
    logging.basicConfig(
        level=logging.DEBUG if spec.debug else logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    _die_with_parent()
    try:
        backend, engine = build(spec)
    except OllaError as exc:
        log.error("%s", exc)
        return 1
    try:
        projector = load_projector(spec, backend)
    except OllaError as exc:
        log.error("%s", exc)
        backend.close()
        return 1
    runner = Runner(spec, backend, engine, handoff, projector)
    try:
        asyncio.run(runner.serve())
    finally:
        if projector is not None:
            projector.close()  # before the model it reads
        backend.close()
    return 1 if runner.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
