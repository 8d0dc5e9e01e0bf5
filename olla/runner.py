"""`python -m olla.runner SPEC_JSON`: one process per loaded model, hosting backend and engine.

The daemon talks to it over a private unix socket (see `olla.runtime.protocol`). One thread owns
the engine and steps it back to back, applying queued submits and cancels between steps, and
writes each step's outputs to the daemon itself; the asyncio loop reads the daemon's requests.
The decode loop never waits for the event loop to be scheduled. A crash here fails this model's
requests only; the daemon sees the exit and reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

# isort: off
import olla.runtime.native_order  # noqa: F401  # before numpy; see there
# isort: on

from olla.backends.choice import EXLLAMAV2
from olla.chat import coerce_parameters
from olla.engine.backend import Backend
from olla.engine.constraint import Constraint
from olla.engine.engine import Engine, StepOutput
from olla.engine.pacing import PrefillPacer
from olla.engine.sampling import Sampler, SamplingParams, TokenLogprob
from olla.errors import InvalidRequest, OllaError
from olla.memory import Memory
from olla.runtime.handoff import DirectStream, receive_socket
from olla.runtime.protocol import LINE_LIMIT, LineWriter, RunnerSpec, read_message

log = logging.getLogger("olla.runner")

_GPU_PREFILL_SEQS = 16  # prompts one step may take on a GPU


class ModelHost(Protocol):
    """What the runner uses of a loaded model beside stepping: a llama.cpp `Backend`, or
    exllamav2's `Exl2Model`."""

    vocab_size: int
    memory: Memory

    def tokenize(self, text: str, add_special: bool) -> list[int]: ...

    def token_bytes(self, token: int) -> bytes: ...

    @property
    def embed_limit(self) -> int: ...

    def embed(self, tokens: list[int]) -> Any: ...

    def constraint(self, fmt: Any) -> Constraint: ...

    def close(self) -> None: ...


class Stepper(Protocol):
    """What the runner drives: olla's `Engine`, or exllamav2's `GeneratorEngine`."""

    @property
    def has_work(self) -> bool: ...

    def add(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        max_tokens: int,
        tenant: str = "",
        constraint: Constraint | None = None,
    ) -> int: ...

    def abort(self, seq_id: int) -> StepOutput | None: ...

    def step(self) -> list[StepOutput]: ...

    def stats(self) -> dict[str, Any]: ...


@dataclass
class _Request:
    """One submitted generation: where its output goes, and its timing marks (ns)."""

    request_id: int
    out: LineWriter
    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int
    constraint: Constraint | None = None  # structured output: handed to the engine
    tenant: str = ""  # the user, for round-robin admission
    submitted_ns: int = field(default_factory=time.perf_counter_ns)
    first_token_ns: int = 0
    seq_id: int | None = None  # set by the engine thread when the engine takes it
    direct: DirectStream | None = None  # text goes straight to the client (olla.runtime.handoff)


@dataclass
class _Embedding:
    """One embed request: its inputs, tokenized."""

    request_id: int
    out: LineWriter
    tokens: list[list[int]]
    truncate: bool


class Runner:
    """Serves one model's engine to the daemon over a unix socket."""

    def __init__(
        self,
        spec: RunnerSpec,
        backend: ModelHost,
        engine: Stepper,
        handoff: socket.socket | None = None,
    ) -> None:
        self.spec = spec
        self.backend = backend
        self.engine = engine
        self._handoff = handoff  # where the daemon passes clients' sockets
        # streams waiting for or writing to a client's socket, by request id (the daemon's)
        self._direct: dict[int, DirectStream] = {}
        # submits and cancels, from the event loop to the engine thread, applied between steps
        self._inbox: queue.SimpleQueue[tuple[str, _Request | _Embedding]] = queue.SimpleQueue()
        self._has_mail = threading.Event()
        self._halt = threading.Event()
        # (connection, request id): both threads use it, each access a single dict operation
        self._by_request: dict[tuple[int, int], _Request] = {}
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
                self._handle(message, out)
        except (ConnectionError, ValueError) as exc:
            log.warning("daemon connection failed: %s", exc)
        except asyncio.CancelledError:
            # the runner is exiting: asyncio.run cancels this reader. Ending quietly keeps
            # Python 3.11's StreamReaderProtocol from logging the cancellation as an error.
            pass
        finally:
            # The daemon holds one connection for the runner's life: when it goes, so do we.
            out.close()
            self._stop.set()

    def _handle(self, message: dict[str, Any], out: LineWriter) -> None:
        op, request_id = message.get("op"), int(message.get("id", 0))
        if op in ("submit", "embed"):
            queue = self._queue_submit if op == "submit" else self._queue_embed
            try:
                queue(request_id, message, out)
            except OllaError as exc:
                out.send({"id": request_id, "error": exc.message, "status": exc.status})
        elif op == "cancel":
            request = self._by_request.pop((id(out), request_id), None)
            if request is not None:
                self._post("abort", request)
            if (stream := self._direct.get(request_id)) is not None:
                stream.abandon()
        elif op == "health":
            out.send({"id": request_id, "done": True, "status": "ok"})
        elif op == "stats":
            # read while the engine thread runs: counters and lengths only, each read atomic
            stats = {**self.engine.stats(), "memory": self.backend.memory.to_json()}
            out.send({"id": request_id, "done": True, **stats})
        else:
            out.send({"id": request_id, "error": f"unknown op {op!r}"})

    def _queue_submit(self, request_id: int, message: dict[str, Any], out: LineWriter) -> None:
        options = coerce_parameters(message.get("options") or {})
        params = SamplingParams.from_options(options)
        if (logprobs := message.get("logprobs")) is not None:
            params = dataclasses.replace(params, logprobs=int(logprobs))
        context = message.get("context") or []
        if any(not 0 <= t < self.backend.vocab_size for t in context):
            raise InvalidRequest(
                'field "context" holds token ids this model does not have; send the context '
                "a reply of this model gave"
            )
        # after a context (which began with BOS), the prompt goes on without another
        text = str(message.get("prompt", ""))
        prompt_ids = [*context, *self.backend.tokenize(text, add_special=not context)]
        if len(prompt_ids) >= self.spec.num_ctx:
            raise InvalidRequest(
                f"the prompt is {len(prompt_ids)} tokens, more than the context of "
                f"{self.spec.num_ctx}; shorten it or raise num_ctx"
            )
        room = self.spec.num_ctx - len(prompt_ids)
        max_tokens = room if params.num_predict < 0 else min(params.num_predict, room)
        fmt = message.get("format")
        constraint = self.backend.constraint(fmt) if fmt else None
        request = _Request(
            request_id,
            out,
            prompt_ids,
            params,
            max_tokens,
            constraint,
            str(message.get("user", "")),
        )
        if (direct := message.get("direct")) is not None:
            request.direct = self._direct_stream(request, direct)
        self._by_request[(id(out), request_id)] = request
        if request.direct is not None:
            out.send({"id": request_id, "accepted": True})  # now the daemon hands the socket over
        self._post("add", request)

    def _direct_stream(self, request: _Request, direct: Any) -> DirectStream:
        if self._handoff is None or not isinstance(direct, dict):
            raise InvalidRequest("direct streaming needs the daemon's hand-over channel")
        if request.params.logprobs >= 0:
            raise InvalidRequest("a direct stream carries no log-probabilities")

        def last(message: dict[str, Any]) -> None:
            self._direct.pop(request.request_id, None)
            request.out.send(message)

        def broken() -> None:
            # the client went away: the stream has told the daemon; free the sequence
            if self._by_request.pop((id(request.out), request.request_id), None) is not None:
                self._post("abort", request)

        stream = DirectStream(request.request_id, direct, asyncio.get_running_loop(), last, broken)
        self._direct[request.request_id] = stream
        return stream

    def _queue_embed(self, request_id: int, message: dict[str, Any], out: LineWriter) -> None:
        """Tokenize each input; the engine thread embeds them."""
        inputs, truncate = message.get("inputs"), bool(message.get("truncate", True))
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            raise InvalidRequest("embed: inputs must be a list of strings")
        tokenized = [self.backend.tokenize(text, add_special=True) for text in inputs]
        self._post("embed", _Embedding(request_id, out, tokenized, truncate))

    def _post(self, kind: str, request: _Request | _Embedding) -> None:
        self._inbox.put((kind, request))
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
        """Step the engine while it has work, writing each step's outputs to the daemon."""
        requests: dict[int, _Request] = {}  # by engine seq id; this thread's own
        engine = self.engine
        while not self._halt.is_set():
            if not engine.has_work and self._inbox.empty():
                self._has_mail.wait()
            self._has_mail.clear()
            self._apply_inbox(requests)
            if not engine.has_work:
                continue
            # a step's lines go out in one write per connection: one wake-up of the daemon
            lines: dict[LineWriter, list[dict[str, Any]]] = {}
            for output in engine.step():
                request = requests.get(output.seq_id)
                if request is not None:
                    lines.setdefault(request.out, []).extend(self._lines(request, output))
                    if output.finished:
                        del requests[output.seq_id]
            for out, messages in lines.items():
                out.send(*messages)

    def _apply_inbox(self, requests: dict[int, _Request]) -> None:
        while not self._inbox.empty():
            kind, request = self._inbox.get_nowait()
            if isinstance(request, _Embedding):
                self._embed(request)
            elif kind == "add":
                try:
                    request.seq_id = self.engine.add(
                        request.prompt_ids,
                        request.params,
                        request.max_tokens,
                        tenant=request.tenant,
                        constraint=request.constraint,
                    )
                except OllaError as exc:
                    if request.constraint is not None:
                        request.constraint.close()
                    self._reject(request, exc)
                    continue
                requests[request.seq_id] = request
            elif request.seq_id is not None and request.seq_id in requests:
                del requests[request.seq_id]  # nothing more goes to it
                self.engine.abort(request.seq_id)

    def _embed(self, job: _Embedding) -> None:
        """Embed between engine steps (the one thread that uses llama.cpp)."""
        started = time.perf_counter_ns()
        try:
            tokens = self._fit(job)
            vectors = [self.backend.embed(ids).tolist() for ids in tokens]
        except OllaError as exc:
            reply: dict[str, Any] = {
                "id": job.request_id,
                "error": exc.message,
                "status": exc.status,
            }
        except Exception as exc:  # a failed embedding fails its request, not the runner
            reply = {"id": job.request_id, "error": f"embedding failed: {exc}", "status": 500}
        else:
            reply = {
                "id": job.request_id,
                "done": True,
                "embeddings": vectors,
                "prompt_eval_count": sum(len(ids) for ids in tokens),
                "duration": time.perf_counter_ns() - started,
            }
        job.out.send(reply)

    def _fit(self, job: _Embedding) -> list[list[int]]:
        """Each input within what one embedding takes: cut when truncating, else a 400."""
        limit = self.backend.embed_limit
        fitted = []
        for i, ids in enumerate(job.tokens):
            if not ids:
                raise InvalidRequest(f"input {i} is empty; embed some text")
            if len(ids) > limit and not job.truncate:
                raise InvalidRequest(
                    f"input {i} is {len(ids)} tokens, more than the {limit} an embedding of "
                    "this model takes; shorten it or send truncate: true"
                )
            fitted.append(ids[:limit])
        return fitted

    def _reject(self, request: _Request, exc: OllaError) -> None:
        if self._by_request.pop((id(request.out), request.request_id), None) is request:
            error = {"id": request.request_id, "error": exc.message, "status": exc.status}
            if request.direct is not None:
                request.direct.fail(error)
            else:
                request.out.send(error)

    def _lines(self, request: _Request, output: StepOutput) -> list[dict[str, Any]]:
        """The messages a step's output makes for one request (engine thread)."""
        key = (id(request.out), request.request_id)
        if self._by_request.get(key) is not request:
            return []  # cancelled while this step ran
        now = time.perf_counter_ns()
        if output.token_ids and not request.first_token_ns:
            request.first_token_ns = now
        if request.direct is not None:
            if output.text:
                request.direct.write(output.text)
            if output.finished:
                self._by_request.pop(key, None)
                request.direct.finish(self._final(request, output, now))
            return []
        lines: list[dict[str, Any]] = []
        if output.text or output.logprobs:
            line: dict[str, Any] = {"id": request.request_id, "text": output.text}
            if output.logprobs:
                line["logprobs"] = [self._logprob_entry(lp) for lp in output.logprobs]
            lines.append(line)
        if output.finished:
            lines.append(self._final(request, output, now))
            self._by_request.pop(key, None)  # the loop may have popped it for a late cancel
        return lines

    def _logprob_entry(self, drawn: TokenLogprob) -> dict[str, Any]:
        """A token's log-probability as Ollama and OpenAI show it: text, bytes, alternatives."""
        token, logprob, best = drawn

        def one(token: int, logprob: float) -> dict[str, Any]:
            data = self.backend.token_bytes(token)
            text = data.decode("utf-8", errors="replace")
            return {"token": text, "logprob": logprob, "bytes": list(data)}

        return {**one(token, logprob), "top_logprobs": [one(t, lp) for t, lp in best]}

    def _final(self, request: _Request, output: StepOutput, now: int) -> dict[str, Any]:
        first = request.first_token_ns or now
        return {
            "id": request.request_id,
            "done": True,
            "done_reason": output.done_reason,
            "prompt_eval_count": output.num_prompt_tokens,
            "prompt_cached_count": output.num_cached_tokens,
            "eval_count": output.num_completion_tokens,
            "prompt_eval_duration": first - request.submitted_ns,
            "eval_duration": now - first,
            "context": [*request.prompt_ids, *output.all_output_ids],
        }


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM us if the daemon dies, so no runner outlives it."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def build(spec: RunnerSpec) -> tuple[ModelHost, Stepper]:
    """Load the model with the spec's backend and make its engine, sized from the spec."""
    if spec.backend == EXLLAMAV2:
        from olla.backends import exllamav2_model

        return exllamav2_model.load(spec)
    return build_llama_cpp(spec)


def build_llama_cpp(spec: RunnerSpec) -> tuple[Backend, Engine]:
    """A llama.cpp backend and olla's engine over it."""
    from pathlib import Path

    from olla.backends.llama_cpp import LlamaCppBackend, LlamaCppConfig

    num_streams = min(spec.num_parallel, 256)  # llama.cpp's most sequences
    if spec.kv_unified:
        # Idle slots keep finished prompts' cells for prefix reuse, so give more slots than
        # streams, and idle prefixes up to one context's worth: a long shared system prompt
        # stays cached, while the cells every decode row's attention must skip stay few.
        num_slots = min(2 * spec.num_parallel, 256)
        max_cached_blocks: int | None = -(-spec.num_ctx // spec.block_size)
    else:
        # A stream per slot, each a context long; idle cells cost other streams nothing.
        num_slots = num_streams
        max_cached_blocks = None
    backend = LlamaCppBackend(
        LlamaCppConfig(
            model_path=Path(spec.model_path),
            num_cells=spec.num_ctx * num_streams,  # either way, a context per stream
            num_slots=num_slots,
            max_batch_tokens=spec.max_batch_tokens,
            num_threads=spec.num_threads,
            num_gpu_layers=spec.num_gpu_layers,
            main_gpu=spec.main_gpu,
            flash_attention=spec.flash_attention,
            cache_type=spec.cache_type,
            kv_unified=spec.kv_unified,
            verbose=spec.debug,
        )
    )
    engine = Engine(
        backend,
        # llama.cpp's threads idle between decodes: the host argmax may take as many
        Sampler(backend.vocab_size, threads=min(8, spec.num_threads or os.cpu_count() or 1)),
        block_size=spec.block_size,
        max_num_seqs=num_streams,
        max_batch_tokens=spec.max_batch_tokens,
        max_cached_blocks=max_cached_blocks,
        # on a CPU a prompt token costs the same in any batch, so prompts go in one per step
        # (the first ones answer sooner); on a GPU a batch of prompts costs little more than one
        max_prefill_seqs=1 if spec.num_gpu_layers == 0 else _GPU_PREFILL_SEQS,
        pacer=PrefillPacer(),
    )
    return backend, engine


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
    runner = Runner(spec, backend, engine, handoff)
    try:
        asyncio.run(runner.serve())
    finally:
        backend.close()
    return 1 if runner.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
