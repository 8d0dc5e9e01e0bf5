"""The daemon's side of a runner: spawn it, talk to it over its unix socket, stop it.

One connection carries every request for the model; each line is routed to the request it
belongs to by id as it is read. If the runner dies, every request in flight fails with a clear
`RunnerCrashed` and the daemon carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any

from olla.backends.choice import EXLLAMAV2
from olla.errors import ModelLoadError, OllaError, RunnerCrashed
from olla.wire.handoff import channel_pair, send_socket
from olla.wire.lines import LineProtocol
from olla.wire.messages import (
    Accepted,
    Cancel,
    Count,
    Done,
    Embed,
    Embeddings,
    Event,
    Failure,
    Query,
    Reply,
    Request,
    Submit,
    decode_event,
)
from olla.wire.spec import RunnerSpec

Events = AsyncGenerator[Event, None]

log = logging.getLogger(__name__)

_END = object()
_RELEASE_WAIT = 5.0  # seconds a cancelled direct stream may take to let go of its client


def _visible_device(index: int) -> str:
    """CUDA's `index`th device as CUDA_VISIBLE_DEVICES names it, within the daemon's own list."""
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return visible[index].strip() if index < len(visible) else str(index)


def describe_exit(returncode: int | None) -> str:
    """`signal 9` for a kill, `status 1` for an exit code."""
    if returncode is None:
        return "an unknown cause"
    if returncode < 0:
        return f"signal {-returncode}"
    return f"status {returncode}"


class RunnerClient:
    """A running `python -m olla.runner` for one model."""

    def __init__(self, spec: RunnerSpec, name: str) -> None:
        self.spec = spec
        self.name = name
        self._process: asyncio.subprocess.Process | None = None
        self._connection: LineProtocol | None = None
        self._queues: dict[int, asyncio.Queue[Any]] = {}
        self._ids = itertools.count(1)
        self._stderr_tail: deque[str] = deque(maxlen=20)
        self._tasks: list[asyncio.Task[None]] = []
        self._failure: OllaError | None = None
        self._handoff: socket.socket | None = None  # passes clients' sockets to the runner

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self, timeout: float = 300.0) -> None:
        """Spawn the runner and wait until it listens; ModelLoadError if it dies first."""
        env = None
        if self.spec.num_gpu_layers == 0:
            # On the CPU means off the GPU: a CUDA llama.cpp would still take a compute buffer
            # there (460 MiB for a 1B model, seen on an H100) beside the CUDA context.
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        elif self.spec.backend == EXLLAMAV2 and self.spec.main_gpu is not None:
            # exllamav2 fills the GPUs it sees in order: let it see the one it was placed on
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": _visible_device(self.spec.main_gpu)}
        self._handoff, theirs = channel_pair()
        self._handoff.setblocking(False)
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "olla.runner",
                self.spec.to_json(),
                str(theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        self._tasks.append(asyncio.create_task(self._forward_stderr()))
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self._process.returncode is not None:
                break
            try:
                _, self._connection = await asyncio.get_running_loop().create_unix_connection(
                    lambda: LineProtocol(self._deliver), self.spec.socket_path
                )
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if asyncio.get_running_loop().time() > deadline:
                    await self.stop()
                    raise ModelLoadError(
                        f"model runner for {self.name} did not start in time"
                    ) from None
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._process.wait(), 0.05)
        if self._connection is None:
            await self._process.wait()
            detail = " | ".join(list(self._stderr_tail)[-3:]) or "no output"
            raise ModelLoadError(
                f"model runner for {self.name} exited with "
                f"{describe_exit(self._process.returncode)} while loading: {detail}"
            )
        self._tasks.append(asyncio.create_task(self._route()))

    async def _forward_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        async for raw in self._process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self._stderr_tail.append(line)
            log.info("runner %s: %s", self.name, line, extra={"model": self.name})

    def _deliver(self, message: dict[str, Any]) -> None:
        queue = self._queues.get(int(message.get("id", 0)))
        if queue is not None:
            queue.put_nowait(message)

    async def _route(self) -> None:
        """When the connection ends: fail every request still waiting on the runner."""
        assert self._connection is not None and self._process is not None
        error = await self._connection.closed
        if error is not None:
            log.warning("runner %s: protocol error: %s", self.name, error)
        try:
            await asyncio.wait_for(self._process.wait(), 5)
        except asyncio.TimeoutError:
            pass
        self._failure = RunnerCrashed(
            f"model runner for {self.name} exited: {describe_exit(self._process.returncode)}"
        )
        for queue in self._queues.values():
            queue.put_nowait(_END)

    def _send(self, request: Request) -> None:
        if self._failure is not None:
            raise self._failure
        assert self._connection is not None, "start() the runner first"
        try:
            self._connection.send(request.to_json())
        except ConnectionError:
            raise RunnerCrashed(f"model runner for {self.name} is gone") from None

    async def _exchange(
        self, request: Submit | Embed | Count | Query, client: int | None = None
    ) -> Events:
        """The runner's events for `request` until its last; a `Failure` is raised as the error
        the runner raised. Closing early cancels a submitted request."""
        request_id = next(self._ids)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queues[request_id] = queue
        finished = False
        try:
            self._send(replace(request, id=request_id))
            while True:
                item = await queue.get()
                if item is _END:
                    assert self._failure is not None
                    raise self._failure
                event = decode_event(item)
                if isinstance(event, Failure):
                    finished = True
                    raise event.error()
                finished = isinstance(event, (Done, Embeddings, Reply))
                yield event
                if finished:
                    return
                if client is not None and isinstance(event, Accepted):
                    self._hand_over(request_id, client)  # the caller has sent the headers
        finally:
            try:
                if not finished and isinstance(request, Submit) and self._failure is None:
                    # the caller went away (client disconnected): free the sequence now
                    with contextlib.suppress(OllaError):
                        self._send(Cancel(request_id))
                    if client is not None:
                        await self._released(queue)
            finally:
                del self._queues[request_id]

    def _hand_over(self, request_id: int, client: int) -> None:
        assert self._handoff is not None
        try:
            send_socket(self._handoff, request_id, client)
        except OSError as exc:
            raise RunnerCrashed(f"model runner for {self.name} took no client: {exc}") from None

    async def _released(self, queue: asyncio.Queue[Any]) -> None:
        """Wait for a cancelled direct stream's last message: the runner has let go of the
        client's socket, so the daemon may write to it again."""
        deadline = asyncio.get_running_loop().time() + _RELEASE_WAIT
        with contextlib.suppress(asyncio.TimeoutError):
            while True:
                left = deadline - asyncio.get_running_loop().time()
                item = await asyncio.wait_for(queue.get(), left)
                if item is _END or item.get("event") in ("error", "done"):
                    return

    def generate(self, submit: Submit, client: int | None = None) -> Events:
        """Stream a completion: `Chunk`s as text is released, then `Done`.

        With `submit.direct` and `client`, the client's socket (a descriptor), the runner writes
        the Ollama lines into the socket itself (olla.runner.direct): the first event is
        `Accepted`; asking for the next one, once the response's headers are out, hands the
        socket over; the last is `Done` with `chunks_ns`, the chunks' times.
        """
        if submit.direct is not None and client is None:
            submit = replace(submit, direct=None)
        return self._exchange(submit, client if submit.direct is not None else None)

    async def embed(self, inputs: list[str], truncate: bool, normalize: bool = True) -> Embeddings:
        """Embeddings of `inputs`, with the count of tokens embedded."""
        async for event in self._exchange(Embed(tuple(inputs), truncate, normalize)):
            if isinstance(event, Embeddings):
                return event
        raise RunnerCrashed(f"model runner for {self.name} gave no embeddings")

    async def count(self, texts: list[str]) -> list[int]:
        """How many tokens each of `texts` is as a prompt."""
        async for event in self._exchange(Count(tuple(texts))):
            if isinstance(event, Reply):
                return [int(n) for n in event.data["tokens"]]
        raise RunnerCrashed(f"model runner for {self.name} counted no tokens")

    async def call(self, op: str) -> dict[str, Any]:
        """A one-answer request: `health` or `stats`."""
        async for event in self._exchange(Query(op)):
            if isinstance(event, Reply):
                return event.data
        raise RunnerCrashed(f"model runner for {self.name} gave no answer to {op}")

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; safe to call twice."""
        process = self._process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
        if self._connection is not None and self._connection.transport is not None:
            self._connection.transport.close()
        if self._handoff is not None:
            self._handoff.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
