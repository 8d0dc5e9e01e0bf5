"""`python -m olla.runner SPEC_JSON`: one process per loaded model, hosting backend and engine.

The daemon talks to it over a private unix socket (see `olla.runtime.protocol`). One asyncio task
owns the engine: it applies queued submits and cancels between steps, runs `Engine.step()` on a
single worker thread, and sends each sequence's new text to the request it belongs to. A crash
here fails this model's requests only; the daemon sees the exit and reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from olla.backends.base import Backend
from olla.engine.engine import Engine, StepOutput
from olla.engine.sampling import Sampler, SamplingParams
from olla.errors import InvalidRequest, OllaError
from olla.registry.modelfile import coerce_parameters
from olla.runtime.protocol import LINE_LIMIT, RunnerSpec, read_message, write_message

log = logging.getLogger("olla.runner")


@dataclass
class _Request:
    """One submitted generation: where its output goes, and its timing marks (ns)."""

    request_id: int
    writer: asyncio.StreamWriter
    prompt_ids: list[int]
    submitted_ns: int = field(default_factory=time.perf_counter_ns)
    first_token_ns: int = 0


class Runner:
    """Serves one model's engine to the daemon over a unix socket."""

    def __init__(self, spec: RunnerSpec, backend: Backend, engine: Engine) -> None:
        self.spec = spec
        self.backend = backend
        self.engine = engine
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._pending: list[tuple[str, Any]] = []
        self._requests: dict[int, _Request] = {}  # by engine seq id
        self._by_request: dict[tuple[int, int], int] = {}  # (connection, request id) -> seq id
        self._wakeup = asyncio.Event()
        self._stop = asyncio.Event()
        self._stats: dict[str, Any] = {}

    async def serve(self) -> None:
        """Listen until SIGTERM or until the daemon's connection closes."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        server = await asyncio.start_unix_server(
            self._connection, path=self.spec.socket_path, limit=LINE_LIMIT
        )
        os.chmod(self.spec.socket_path, 0o600)
        log.info("runner ready", extra={"model": self.spec.model_path, "pid": os.getpid()})
        engine_task = asyncio.create_task(self._engine_loop())
        try:
            await self._stop.wait()
        finally:
            server.close()
            engine_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await engine_task
            self._executor.shutdown(wait=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.spec.socket_path)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (message := await read_message(reader)) is not None:
                await self._handle(message, writer)
        except (ConnectionError, ValueError) as exc:
            log.warning("daemon connection failed: %s", exc)
        finally:
            # The daemon holds one connection for the runner's life: when it goes, so do we.
            self._stop.set()

    async def _handle(self, message: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        op, request_id = message.get("op"), int(message.get("id", 0))
        if op == "submit":
            try:
                self._queue_submit(request_id, message, writer)
            except OllaError as exc:
                await write_message(writer, {"id": request_id, "error": exc.message,
                                             "status": exc.status})  # fmt: skip
        elif op == "cancel":
            seq_id = self._by_request.get((id(writer), request_id))
            if seq_id is not None:
                self._pending.append(("abort", seq_id))
                self._wakeup.set()
        elif op == "health":
            await write_message(writer, {"id": request_id, "done": True, "status": "ok"})
        elif op == "stats":
            await write_message(writer, {"id": request_id, "done": True, **self._stats})
        else:
            await write_message(writer, {"id": request_id, "error": f"unknown op {op!r}"})

    def _queue_submit(self, request_id: int, message: dict[str, Any], writer: Any) -> None:
        options = coerce_parameters(message.get("options") or {})
        params = SamplingParams.from_options(options)
        prompt_ids = self.backend.tokenize(str(message.get("prompt", "")), add_special=True)
        if len(prompt_ids) >= self.spec.num_ctx:
            raise InvalidRequest(
                f"the prompt is {len(prompt_ids)} tokens, more than the context of "
                f"{self.spec.num_ctx}; shorten it or raise num_ctx"
            )
        room = self.spec.num_ctx - len(prompt_ids)
        max_tokens = room if params.num_predict < 0 else min(params.num_predict, room)
        request = _Request(request_id, writer, prompt_ids)
        self._pending.append(("add", (request, params, max_tokens)))
        self._wakeup.set()

    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, []
        for kind, payload in pending:
            if kind == "abort":
                self.engine.abort(payload)
                request = self._requests.pop(payload, None)  # nothing more goes to it
                if request is not None:
                    self._by_request.pop((id(request.writer), request.request_id), None)
                continue
            request, params, max_tokens = payload
            seq_id = self.engine.add(request.prompt_ids, params, max_tokens)
            self._requests[seq_id] = request
            self._by_request[(id(request.writer), request.request_id)] = seq_id

    async def _engine_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending and not self.engine.has_work:
                await self._wakeup.wait()
            self._wakeup.clear()
            self._apply_pending()
            if not self.engine.has_work:
                continue
            outputs = await loop.run_in_executor(self._executor, self.engine.step)
            for output in outputs:
                self._deliver(output)
            self._stats = self.engine.stats()

    def _deliver(self, output: StepOutput) -> None:
        request = self._requests.get(output.seq_id)
        if request is None:
            return
        now = time.perf_counter_ns()
        if output.token_ids and not request.first_token_ns:
            request.first_token_ns = now
        lines = []
        if output.text:
            lines.append({"id": request.request_id, "text": output.text})
        if output.finished:
            lines.append(self._final(request, output, now))
            del self._requests[output.seq_id]
            self._by_request.pop((id(request.writer), request.request_id), None)
        for line in lines:
            if not request.writer.is_closing():
                request.writer.write(_encode(line))

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


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode() + b"\n"


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM us if the daemon dies, so no runner outlives it."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def build(spec: RunnerSpec) -> tuple[Backend, Engine]:
    """Load the model and make its engine, sized from the spec."""
    from pathlib import Path

    from olla.backends.llama_cpp import LlamaCppBackend, LlamaCppConfig

    # Idle slots keep finished prompts' cells for prefix reuse, so give more slots than streams.
    num_slots = min(2 * spec.num_parallel, 256)
    backend = LlamaCppBackend(
        LlamaCppConfig(
            model_path=Path(spec.model_path),
            num_cells=spec.num_ctx * spec.num_parallel,
            num_slots=num_slots,
            max_batch_tokens=spec.max_batch_tokens,
            num_threads=spec.num_threads,
            num_gpu_layers=spec.num_gpu_layers,
            flash_attention=spec.flash_attention,
            cache_type=spec.cache_type,
            verbose=spec.debug,
        )
    )
    engine = Engine(
        backend,
        Sampler(backend.vocab_size),
        block_size=spec.block_size,
        max_num_seqs=spec.num_parallel,
        max_batch_tokens=spec.max_batch_tokens,
    )
    return backend, engine


def main(argv: list[str]) -> int:
    """Entry point: load the model from the spec, then serve until told to stop."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    if len(argv) != 2:
        print("usage: python -m olla.runner SPEC_JSON (started by olla serve)", file=sys.stderr)
        return 2
    _die_with_parent()
    spec = RunnerSpec.from_json(argv[1])
    try:
        backend, engine = build(spec)
    except OllaError as exc:
        log.error("%s", exc)
        return 1
    try:
        asyncio.run(Runner(spec, backend, engine).serve())
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
