"""Interim generation inside the daemon: one loaded model, one request at a time.

This stands in for the runner processes and the continuous-batching engine (the engine issue), so
that `olla run`, `/api/chat` and `/api/generate` work end to end now. Its interface — `generate()`
yielding `Chunk`s — is what the model manager will provide; the routes do not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olla.asyncutil import progress_of
from olla.config import Settings
from olla.errors import InvalidRequest, ModelLoadError
from olla.registry.modelfile import Message, ParamValue
from olla.registry.store import ResolvedModel

log = logging.getLogger(__name__)

# Ollama's defaults for sampling options a request and the Modelfile leave unset.
_DEFAULTS: dict[str, Any] = {
    "temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "typical_p": 1.0,
    "repeat_penalty": 1.1, "presence_penalty": 0.0, "frequency_penalty": 0.0,
    "num_predict": -1, "mirostat": 0, "mirostat_tau": 5.0, "mirostat_eta": 0.1,
}  # fmt: skip


@dataclass(frozen=True)
class GenerateRequest:
    """One generation: chat messages (rendered with the model's template) or a raw prompt."""

    model: ResolvedModel
    messages: list[Message] | None = None
    prompt: str | None = None
    options: dict[str, ParamValue] = field(default_factory=dict)


@dataclass
class Chunk:
    """A piece of output; the last one has `done` set and carries counts and timings (ns)."""

    text: str
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int = 0
    eval_count: int = 0
    load_duration: int = 0
    prompt_eval_duration: int = 0
    eval_duration: int = 0
    total_duration: int = 0


@dataclass
class _Loaded:
    path: Path
    num_ctx: int
    llama: Any


class InProcessGenerator:
    """Loads one GGUF at a time with llama-cpp-python and serves requests one after another."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = asyncio.Lock()
        self._loaded: _Loaded | None = None

    @property
    def loaded_path(self) -> Path | None:
        return self._loaded.path if self._loaded else None

    async def generate(self, req: GenerateRequest) -> AsyncGenerator[Chunk, None]:
        """Stream the answer to `req`; waits while another request is generating."""
        if req.model.model_path is None:
            raise InvalidRequest(f"model {req.model.entry.name.display} has no model file")
        options = {**_DEFAULTS, **req.model.parameters, **req.options}
        async with self._lock:
            start = time.perf_counter_ns()
            loaded = await asyncio.to_thread(self._load, req.model.model_path, options)
            load_ns = time.perf_counter_ns() - start
            prompt, stops = self._render(loaded, req)
            work = _Generation(loaded.llama, prompt, stops, options, start, load_ns)
            # closing us (client gone) must stop the worker thread before the lock is released
            async with contextlib.aclosing(progress_of(work.run)) as chunks:
                async for chunk in chunks:
                    yield chunk

    def _load(self, path: Path, options: dict[str, Any]) -> _Loaded:
        num_ctx = int(options.get("num_ctx") or self._settings.context_length)
        if self._loaded and self._loaded.path == path and self._loaded.num_ctx == num_ctx:
            return self._loaded
        self._loaded = None  # drop the previous model before loading the next
        from llama_cpp import Llama  # imported lazily: the CLI never needs the native library

        log.info("loading model", extra={"path": str(path), "num_ctx": num_ctx})
        try:
            llama = Llama(
                model_path=str(path),
                n_ctx=num_ctx,
                n_threads=options.get("num_thread") or None,
                n_gpu_layers=int(options.get("num_gpu", 0) or 0),
                verbose=self._settings.debug,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"could not load {path.name}: {exc}") from None
        self._loaded = _Loaded(path, num_ctx, llama)
        return self._loaded

    def _render(self, loaded: _Loaded, req: GenerateRequest) -> tuple[str, list[str]]:
        if req.messages is None:
            return req.prompt or "", []
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llama = loaded.llama
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise InvalidRequest("this model has no chat template; use /api/generate with raw")
        token_text = lambda tid: llama.detokenize([tid], special=True).decode(errors="replace")  # noqa: E731
        formatter = Jinja2ChatFormatter(
            template,
            eos_token=token_text(llama.token_eos()),
            bos_token=token_text(llama.token_bos()),
        )
        messages = list(req.model.messages) + list(req.messages)
        if req.model.system and not any(m.role == "system" for m in messages):
            messages.insert(0, Message("system", req.model.system))
        payload: list[Any] = [{"role": m.role, "content": m.content} for m in messages]
        result = formatter(messages=payload)
        stops = [result.stop] if isinstance(result.stop, str) else list(result.stop or [])
        return result.prompt, stops


@dataclass
class _Generation:
    """The blocking part of one request, run in a worker thread."""

    llama: Any
    prompt: str
    stops: list[str]
    options: dict[str, Any]
    start_ns: int
    load_ns: int

    def run(self, report: Callable[[Chunk], None], cancelled: threading.Event) -> None:
        opts = self.options
        stop = opts.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        num_predict = int(opts["num_predict"])
        prompt_tokens = self.llama.tokenize(self.prompt.encode(), add_bos=True, special=True)
        eval_start, first_ns, count, reason = time.perf_counter_ns(), 0, 0, "stop"
        stream = self.llama.create_completion(
            prompt_tokens, max_tokens=num_predict if num_predict > 0 else -1,
            temperature=opts["temperature"], top_p=opts["top_p"], min_p=opts["min_p"],
            typical_p=opts["typical_p"], top_k=opts["top_k"], repeat_penalty=opts["repeat_penalty"],
            presence_penalty=opts["presence_penalty"], frequency_penalty=opts["frequency_penalty"],
            mirostat_mode=opts["mirostat"], mirostat_tau=opts["mirostat_tau"],
            mirostat_eta=opts["mirostat_eta"], seed=opts.get("seed"),
            stop=self.stops + stop, stream=True,
        )  # fmt: skip
        for piece in stream:
            if cancelled.is_set():
                reason = "cancelled"
                break
            choice = piece["choices"][0]
            first_ns = first_ns or time.perf_counter_ns()
            if choice.get("finish_reason") == "length":
                reason = "length"
            elif choice.get("finish_reason") is None:  # the closing chunk carries no token
                count += 1
            if choice["text"]:
                report(Chunk(text=choice["text"]))
        end = time.perf_counter_ns()
        first_ns = first_ns or end
        report(
            Chunk(
                text="", done=True, done_reason=reason,
                prompt_eval_count=len(prompt_tokens), eval_count=count,
                load_duration=self.load_ns, prompt_eval_duration=first_ns - eval_start,
                eval_duration=end - first_ns, total_duration=end - self.start_ns,
            )
        )  # fmt: skip
