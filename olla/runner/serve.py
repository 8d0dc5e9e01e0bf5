"""The runner's serve loop: the daemon's requests in, the engine stepped, the events out.

One thread owns the engine and steps it back to back, applying queued submits and cancels
between steps, and writes each step's events to the daemon itself; the asyncio loop reads the
daemon's requests. The decode loop never waits for the event loop to be scheduled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import queue
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from olla.engine.engine import StepOutput
from olla.engine.stepper import Stepper
from olla.errors import InvalidRequest, OllaError
from olla.runner import intake, replies
from olla.runner.build import ModelHost
from olla.runner.direct import DirectStream
from olla.runner.intake import Embedding, Generation
from olla.wire.handoff import receive_socket
from olla.wire.lines import LINE_LIMIT, LineWriter, read_message
from olla.wire.messages import (
    Accepted,
    Cancel,
    Count,
    Direct,
    Done,
    Embed,
    Embeddings,
    Event,
    Failure,
    Query,
    Reply,
    Request,
    Submit,
    decode_request,
)
from olla.wire.spec import RunnerSpec

if TYPE_CHECKING:
    from olla.backends.llama_vision import Projector

log = logging.getLogger("olla.runner")


class Runner:
    """Serves one model's engine to the daemon over a unix socket."""

    def __init__(
        self,
        spec: RunnerSpec,
        backend: ModelHost,
        engine: Stepper,
        handoff: socket.socket | None = None,
        projector: Projector | None = None,
    ) -> None:
        self.spec = spec
        self.backend = backend
        self.engine = engine
        # images are read and encoded on a thread of their own (libmtmd's context is not
        # thread-safe), while the engine thread goes on stepping the other streams
        self._projector = projector
        self._vision = ThreadPoolExecutor(1, "vision") if projector is not None else None
        self._preparing: dict[tuple[int, int], asyncio.Task[None]] = {}
        self._handoff = handoff  # where the daemon passes clients' sockets
        # streams waiting for or writing to a client's socket, by request id (the daemon's)
        self._direct: dict[int, DirectStream] = {}
        # submits and cancels, from the event loop to the engine thread, applied between steps
        self._inbox: queue.SimpleQueue[tuple[str, Generation | Embedding]] = queue.SimpleQueue()
        self._has_mail = threading.Event()
        self._halt = threading.Event()
        # (connection, request id): both threads use it, each access a single dict operation
        self._by_request: dict[tuple[int, int], Generation] = {}
        self._stop = asyncio.Event()
        self.failed = False  # the engine thread died: exit non-zero

    async def serve(self) -> None:
        """Listen until SIGTERM or until the daemon's connection closes."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        server = await asyncio.start_unix_server(
            self._connection, path=self.spec.socket_path, limit=LINE_LIMIT
        )
        os.chmod(self.spec.socket_path, 0o600)
        if self._handoff is not None:
            self._handoff.setblocking(False)
            loop.add_reader(self._handoff.fileno(), self._receive_sockets)
        log.info("runner ready", extra={"model": self.spec.model_path, "pid": os.getpid()})
        thread = threading.Thread(target=self._engine_thread, args=(loop,), name="engine")
        thread.start()
        try:
            await self._stop.wait()
        finally:
            server.close()
            self._halt.set()
            self._has_mail.set()
            await asyncio.to_thread(thread.join)
            if self._vision is not None:
                self._vision.shutdown(cancel_futures=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.spec.socket_path)
            if self._handoff is not None:
                loop.remove_reader(self._handoff.fileno())
                self._handoff.close()

    def _receive_sockets(self) -> None:
        """Attach each socket the daemon handed over to its request's stream."""
        assert self._handoff is not None
        while True:
            try:
                received = receive_socket(self._handoff)
            except (ConnectionError, OSError) as exc:
                log.warning("hand-over channel failed: %s", exc)
                asyncio.get_running_loop().remove_reader(self._handoff.fileno())
                return
            if received is None:
                return
            request_id, sock = received
            stream = self._direct.get(request_id)
            if stream is None:
                sock.close()  # cancelled before its socket came
            else:
                stream.attach(sock)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        out = LineWriter(writer)
        try:
            while (message := await read_message(reader)) is not None:
                self._handle(decode_request(message), out)
        except (ConnectionError, ValueError) as exc:  # ProtocolError is a ValueError
            log.warning("daemon connection failed: %s", exc)
        except asyncio.CancelledError:
            # the runner is exiting: asyncio.run cancels this reader. Ending quietly keeps
            # Python 3.11's StreamReaderProtocol from logging the cancellation as an error.
            pass
        finally:
            # The daemon holds one connection for the runner's life: when it goes, so do we.
            out.close()
            self._stop.set()

    def _handle(self, request: Request, out: LineWriter) -> None:
        if isinstance(request, (Submit, Embed)):
            try:
                if isinstance(request, Submit) and request.images:
                    self._queue_with_images(request, out)
                elif isinstance(request, Submit):
                    self._queue_submit(request, out)
                else:
                    self._post("embed", intake.embedding(request, out, self.backend))
            except OllaError as exc:
                send(out, Failure.of(request.id, exc))
        elif isinstance(request, Cancel):
            if (task := self._preparing.pop((id(out), request.id), None)) is not None:
                task.cancel()  # its images were being read: it never reaches the engine
            generation = self._by_request.pop((id(out), request.id), None)
            if generation is not None:
                self._post("abort", generation)
            if (stream := self._direct.get(request.id)) is not None:
                stream.abandon()
        elif isinstance(request, Count):
            # tokenizing is a C call of microseconds per kilobyte: no need to leave the loop
            tokens = [self._count(text) for text in request.texts]
            send(out, Reply(request.id, {"tokens": tokens}))
        elif isinstance(request, Query):
            send(out, Reply(request.id, self._answer(request.op)))

    def _count(self, text: str) -> int:
        """A prompt's tokens; with a projector, each image tag as an image's tokens."""
        if self._projector is not None:
            return self._projector.count(text)
        return len(self.backend.tokenize(text, add_special=True))

    def _queue_with_images(self, submit: Submit, out: LineWriter) -> None:
        """Read and encode the images on the vision thread, then queue the request as any."""
        if self._projector is None:
            raise InvalidRequest(
                f"model {self.spec.model_name or 'this model'} reads no images: it has no "
                "vision projector; send text only, or use a vision model"
            )
        key = (id(out), submit.id)
        task = asyncio.get_running_loop().create_task(self._prepare(submit, out, self._projector))
        self._preparing[key] = task
        task.add_done_callback(lambda _: self._preparing.pop(key, None))

    async def _prepare(self, submit: Submit, out: LineWriter, projector: Projector) -> None:
        files = [base64.b64decode(image) for image in submit.images]
        loop = asyncio.get_running_loop()
        try:
            prepared = await loop.run_in_executor(
                self._vision, projector.prepare, submit.prompt, files, not submit.context
            )
            self._preparing.pop((id(out), submit.id), None)  # from here a Cancel finds it queued
            self._queue_submit(submit, out, intake.Prompt(prepared.ids, prepared.images))
        except OllaError as exc:
            send(out, Failure.of(submit.id, exc))
        except Exception as exc:  # a failed image fails its request, not the runner
            log.exception("reading images failed")
            send(out, Failure(submit.id, f"reading the images failed: {exc}", 500))

    def _answer(self, op: str) -> dict[str, Any]:
        if op == "health":
            return {"status": "ok"}
        # read while the engine thread runs: counters and lengths only, each read atomic
        return {**self.engine.stats(), "memory": self.backend.memory.to_json()}

    def _queue_submit(
        self, submit: Submit, out: LineWriter, prompt: intake.Prompt | None = None
    ) -> None:
        generation = intake.generation(submit, out, self.backend, self.spec.num_ctx, prompt)
        if submit.direct is not None:
            generation.direct = self._direct_stream(generation, submit.direct)
        self._by_request[(id(out), submit.id)] = generation
        if generation.direct is not None and len(self._by_request) <= self.spec.num_parallel:
            # a sequence is free: the daemon sends the headers and hands the socket over while
            # the engine starts. Else `Accepted` waits for the request's first output, so that
            # one that waits past the queue timeout still gets its 503 as a status.
            self._accept(generation)
        self._post("add", generation)

    @staticmethod
    def _accept(generation: Generation) -> None:
        """Tell the daemon a direct stream may begin: it hands the client's socket over."""
        if not generation.accepted:
            generation.accepted = True
            send(generation.out, Accepted(generation.request_id))

    def _direct_stream(self, generation: Generation, direct: Direct) -> DirectStream:
        if self._handoff is None:
            raise InvalidRequest("direct streaming needs the daemon's hand-over channel")
        if generation.sequence.params.logprobs >= 0:
            raise InvalidRequest("a direct stream carries no log-probabilities")

        def last(event: Done | Failure) -> None:
            self._direct.pop(generation.request_id, None)
            send(generation.out, event)

        def broken() -> None:
            # the client went away: the stream has told the daemon; free the sequence
            key = (id(generation.out), generation.request_id)
            if self._by_request.pop(key, None) is not None:
                self._post("abort", generation)

        loop = asyncio.get_running_loop()
        stream = DirectStream(generation.request_id, direct, loop, last, broken)
        self._direct[generation.request_id] = stream
        return stream

    def _post(self, kind: str, job: Generation | Embedding) -> None:
        self._inbox.put((kind, job))
        self._has_mail.set()

    def _engine_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the engine; an engine bug ends the runner (the daemon fails its requests)."""
        try:
            self._engine_loop()
        except BaseException:
            log.exception("engine failed; the runner stops")
            self.failed = True
            loop.call_soon_threadsafe(self._stop.set)

    def _engine_loop(self) -> None:
        """Step the engine while it has work, writing each step's events to the daemon."""
        requests: dict[int, Generation] = {}  # by engine seq id; this thread's own
        engine = self.engine
        while not self._halt.is_set():
            if not engine.has_work and self._inbox.empty():
                self._has_mail.wait()
            self._has_mail.clear()
            self._apply_inbox(requests)
            if not engine.has_work:
                continue
            # a step's events go out in one write per connection: one wake-up of the daemon
            events: dict[LineWriter, list[Event]] = {}
            for output in engine.step():
                generation = requests.get(output.seq_id)
                if generation is not None:
                    events.setdefault(generation.out, []).extend(self._events(generation, output))
                    if output.finished:
                        del requests[output.seq_id]
            for out, batch in events.items():
                send(out, *batch)

    def _apply_inbox(self, requests: dict[int, Generation]) -> None:
        while not self._inbox.empty():
            kind, job = self._inbox.get_nowait()
            if isinstance(job, Embedding):
                self._embed(job)
            elif kind == "add":
                try:
                    job.seq_id = self.engine.add(job.sequence)
                except OllaError as exc:
                    if job.sequence.constraint is not None:
                        job.sequence.constraint.close()
                    self._reject(job, exc)
                    continue
                requests[job.seq_id] = job
            elif job.seq_id is not None and job.seq_id in requests:
                del requests[job.seq_id]  # nothing more goes to it
                self.engine.abort(job.seq_id)

    def _embed(self, job: Embedding) -> None:
        """Embed between engine steps (the one thread that uses llama.cpp)."""
        started = time.perf_counter_ns()
        reply: Event
        try:
            tokens = intake.fit(job, self.backend.embed_limit)
            pooled = (self.backend.embed(ids) for ids in tokens)
            vectors = [(intake.unit(v) if job.normalize else v).tolist() for v in pooled]
        except OllaError as exc:
            reply = Failure.of(job.request_id, exc)
        except Exception as exc:  # a failed embedding fails its request, not the runner
            reply = Failure(job.request_id, f"embedding failed: {exc}", 500)
        else:
            count = sum(len(ids) for ids in tokens)
            reply = Embeddings(job.request_id, vectors, count, time.perf_counter_ns() - started)
        send(job.out, reply)

    def _reject(self, generation: Generation, exc: OllaError) -> None:
        key = (id(generation.out), generation.request_id)
        if self._by_request.pop(key, None) is generation:
            failure = Failure.of(generation.request_id, exc)
            if generation.direct is not None:
                generation.direct.fail(failure)
            else:
                send(generation.out, failure)

    def _events(self, generation: Generation, output: StepOutput) -> list[Event]:
        """The events a step's output makes for one request (engine thread)."""
        key = (id(generation.out), generation.request_id)
        if self._by_request.get(key) is not generation:
            return []  # cancelled while this step ran
        now = time.perf_counter_ns()
        if output.token_ids and not generation.first_token_ns:
            generation.first_token_ns = now
        last = replies.end(generation, output, now, self.spec) if output.finished else None
        if generation.direct is not None:
            if isinstance(last, Failure):  # it never got a sequence: the error is its answer
                self._by_request.pop(key, None)
                generation.direct.fail(last)
                return []
            self._accept(generation)
            if output.text:
                generation.direct.write(output.text)
            if last is not None:
                self._by_request.pop(key, None)
                generation.direct.finish(last)
            return []
        events: list[Event] = []
        if (chunk := replies.chunk(generation, output, self.backend)) is not None:
            events.append(chunk)
        if last is not None:
            events.append(last)
            self._by_request.pop(key, None)  # the loop may have popped it for a late cancel
        return events


def send(out: LineWriter, *events: Event) -> None:
    """Events to the daemon, in one write."""
    out.send(*(event.to_json() for event in events))
