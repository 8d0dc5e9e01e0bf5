"""POST /api/chat and /api/generate: render the prompt, stream the runner's output."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from olla.api import (
    get_bool,
    get_int,
    get_model_name,
    get_object,
    get_str,
    parse_chat_messages,
    stream_head,
    text_payload,
)
from olla.chat import Message, coerce_parameters
from olla.engine.sampling_params import MAX_TOP_LOGPROBS
from olla.errors import InvalidRequest, RequestTimeout
from olla.registry.describe import capabilities
from olla.registry.store import ResolvedModel
from olla.runtime.prompting import chat_prompt
from olla.server import fields
from olla.server.bodies import read_json
from olla.server.keys import CHAT_FORMATS, MANAGER, REGISTRY, SETTINGS, USER_LIMITS
from olla.server.metrics import METRICS, REQUEST_INFO
from olla.server.streaming import direct_client, respond, respond_direct
from olla.templates import render_insert
from olla.tool_calls import CallStream, ToolCall, parse_tools, tool_names
from olla.units import format_duration, parse_duration

T = TypeVar("T")


@dataclass
class _Job:
    """A parsed generation request, common to chat and generate."""

    model: ResolvedModel
    options: dict[str, Any]
    stream: bool
    kind: str  # "message" (chat) or "response" (generate)
    started: int
    keep_alive: float | None  # seconds; None: the daemon's OLLA_KEEP_ALIVE
    format: str | dict[str, Any] | None = None  # "json" or a JSON schema: a grammar in the runner
    tools: list[dict[str, Any]] = field(default_factory=list)  # offered to the model (chat)
    context: list[int] | None = None  # /api/generate: the tokens of the conversation so far
    logprobs: int | None = None  # alternatives to report per token; None: no log-probabilities


async def _prepare(
    request: web.Request, kind: str, check: Callable[[dict[str, Any]], T]
) -> tuple[_Job, T]:
    """Validate the common fields and `check` the rest, then resolve the model (404 last)."""
    started = time.perf_counter_ns()
    body = await read_json(request, fields.CHAT if kind == "message" else fields.GENERATE)
    name = get_model_name(body)
    if body.get("think"):
        raise InvalidRequest(f'field "think": {name.display} does not support thinking')
    logprobs = logprobs_of(body, "logprobs", "top_logprobs")
    if body.get("images"):
        raise InvalidRequest(f'field "images": {name.display} reads text only; send text')
    keep_alive = keep_alive_of(body.get("keep_alive"))
    request_options = coerce_parameters(get_object(body, "options"))
    stream = get_bool(body, "stream", True)
    fmt = format_of(body.get("format"))
    checked = check(body)
    model = await asyncio.to_thread(request.app[REGISTRY].resolve, name)
    options = {**model.parameters, **request_options}
    job = _Job(model, options, stream, kind, started, keep_alive, fmt)
    job.logprobs = logprobs
    return job, checked


def logprobs_of(body: Mapping[str, Any], flag: str, top: str) -> int | None:
    """How many alternatives to report per token (0: the token's own only); None: off."""
    wanted = body.get(flag)
    if wanted is None or wanted is False:
        if body.get(top):
            raise InvalidRequest(f'field "{top}" needs "{flag}": true')
        return None
    if wanted is not True:
        raise InvalidRequest(f'field "{flag}" must be true or false')
    return get_int(body, top, 0, MAX_TOP_LOGPROBS) or 0


def format_of(value: Any) -> str | dict[str, Any] | None:
    """Ollama's `format`: "json", a JSON schema, or nothing ("" and null)."""
    if value is None or value == "":
        return None
    if value == "json" or isinstance(value, dict):
        return value
    raise InvalidRequest(f'field "format" must be "json" or a JSON schema object, not {value!r}')


def keep_alive_of(value: Any) -> float | None:
    if value is None or value == "":  # "" as absent: the daemon's OLLA_KEEP_ALIVE
        return None
    if not isinstance(value, (str, int, float)):
        raise InvalidRequest('field "keep_alive" must be a duration ("5m", "1h30m") or seconds')
    try:
        return parse_duration(value)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f'field "keep_alive": {exc}') from None


async def chat(request: web.Request) -> web.StreamResponse:
    job, (messages, tools) = await _prepare(
        request,
        "message",
        lambda body: (
            parse_chat_messages(body.get("messages") or []),
            parse_tools(body.get("tools")),
        ),
    )
    if not messages:
        return await _load_only(request, job)
    fmt = await asyncio.to_thread(request.app[CHAT_FORMATS].get, model_path(job.model))
    prompt = chat_prompt(job.model, fmt, messages, tools=tools)
    job.tools = tools
    return await _generate(request, job, prompt)


def _generate_fields(body: dict[str, Any]) -> dict[str, Any]:
    if body.get("tools"):
        raise InvalidRequest('field "tools" belongs to /api/chat; /api/generate takes none')
    context = body.get("context")
    if context is not None and not (
        isinstance(context, list) and all(type(t) is int and t >= 0 for t in context)
    ):
        raise InvalidRequest('field "context" must be the list of token ids a reply gave')
    fields = {k: get_str(body, k) for k in ("prompt", "system", "template", "suffix")}
    return {**fields, "raw": get_bool(body, "raw", False), "context": context or None}


async def generate(request: web.Request) -> web.StreamResponse:
    job, body = await _prepare(request, "response", _generate_fields)
    prompt = body["prompt"] or ""
    if not prompt and not body["suffix"]:
        return await _load_only(request, job)
    if body["suffix"]:
        prompt = insert_prompt(job.model, prompt, body["suffix"], body["system"], body["template"])
    elif not body["raw"]:
        fmt = await asyncio.to_thread(request.app[CHAT_FORMATS].get, model_path(job.model))
        user = [Message("user", prompt)]
        prompt = chat_prompt(job.model, fmt, user, body["system"], body["template"])
    job.context = body["context"]
    return await _generate(request, job, prompt)


def insert_prompt(
    model: ResolvedModel, prompt: str, suffix: str, system: str | None, template: str | None
) -> str:
    """Fill-in-the-middle: a template with `.Suffix` (Ollama's "insert" capability)."""
    source = template if template is not None else model.template
    if not source or "insert" not in capabilities(source):
        raise InvalidRequest(
            f'field "suffix": {model.entry.name.display} does not support insert: its template '
            "has no .Suffix (use a code model whose template does)"
        )
    return render_insert(source, prompt, suffix, system if system is not None else model.system)


async def _load_only(request: web.Request, job: _Job) -> web.StreamResponse:
    """An empty prompt loads the model (keep_alive 0: unloads it) and answers at once."""
    manager = request.app[MANAGER]
    if job.keep_alive == 0:
        await manager.unload(job.model)
        reason = "unload"
    else:
        lease = await manager.acquire(job.model, job.options, job.keep_alive)
        await lease.release()
        reason = "load"
    line = {**_head(job), **_payload(job.kind, ""), "done": True, "done_reason": reason}

    async def one() -> AsyncGenerator[dict[str, Any], None]:
        yield line

    return await respond(request, one(), job.stream)


async def _generate(request: web.Request, job: _Job, prompt: str) -> web.StreamResponse:
    # a plain stream goes from the runner straight to the client; tools and log-probabilities
    # need the daemon to shape each line
    plain = job.stream and not job.tools and job.logprobs is None
    client = direct_client(request) if plain else None
    direct = None if client is None else {"model": job.model.entry.name.display, "kind": job.kind}
    async with generation(
        request,
        job.model,
        job.options,
        job.keep_alive,
        prompt,
        job.format,
        job.context,
        job.logprobs,
        direct=direct,
        client=client,
    ) as (
        items,
        load_seconds,
    ):
        if client is not None:
            request.get(REQUEST_INFO, {})["direct"] = True  # for the log line
            load_ns = int(load_seconds * 1e9)
            return await respond_direct(request, items, lambda item: _final(item, job, "", load_ns))
        lines = _ollama_lines(items, job, int(load_seconds * 1e9))
        return await respond(request, lines, job.stream)


@contextlib.asynccontextmanager
async def generation(
    request: web.Request,
    model: ResolvedModel,
    options: dict[str, Any],
    keep_alive: float | None,
    prompt: str,
    fmt: Any = None,
    context: list[int] | None = None,
    logprobs: int | None = None,
    direct: dict[str, Any] | None = None,
    client: int | None = None,
) -> AsyncIterator[tuple[AsyncGenerator[dict[str, Any], None], float]]:
    """The runner's lines for `prompt` (and the load time), the model held until the block ends.

    The user's own limits come first (429 past them), then the model's queue (503 past it).
    `direct` and `client`: the runner streams into the client's socket (RunnerClient.generate).
    """
    user = str(request.get("user") or "")
    options = _capped(options, request.app[SETTINGS].max_predict)
    async with request.app[USER_LIMITS].hold(user):
        lease = await request.app[MANAGER].acquire(model, options, keep_alive)
        name = model.entry.name.display
        info = request.get(REQUEST_INFO, {})
        info["model"] = name
        try:
            items = lease.runner.generate(
                prompt, options, fmt, context, logprobs, user, direct, client
            )
            timeout = request.app[SETTINGS].request_timeout
            if timeout > 0:
                items = _within(items, timeout)
            yield request.app[METRICS].observe_stream(items, name, info), lease.load_seconds
        finally:
            await lease.release()  # the model's keep_alive starts when its last request ends


async def _within(
    items: AsyncGenerator[dict[str, Any], None], seconds: float
) -> AsyncGenerator[dict[str, Any], None]:
    """`items` until `seconds` have passed; then the generation is cancelled (504)."""
    deadline = time.monotonic() + seconds
    async with contextlib.aclosing(items):  # closing the runner's stream cancels the sequence
        while True:
            try:
                item = await asyncio.wait_for(anext(items), deadline - time.monotonic())
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise RequestTimeout(
                    f"the generation ran over {format_duration(seconds)} (OLLA_REQUEST_TIMEOUT) "
                    "and was stopped; ask for fewer tokens (num_predict) or a longer limit"
                ) from None
            yield item


def _capped(options: dict[str, Any], ceiling: int) -> dict[str, Any]:
    """num_predict within the operator's ceiling (OLLA_MAX_PREDICT; 0: none); -1 is capped too."""
    asked = options.get("num_predict")
    if not ceiling or (asked is not None and 0 <= int(asked) <= ceiling):
        return options
    return {**options, "num_predict": ceiling}


def model_path(model: ResolvedModel) -> Any:
    """The model's file, for its chat format; 400 for a model without one."""
    if model.model_path is None:
        raise InvalidRequest(f"model {model.entry.name.display} has no model file")
    return model.model_path


async def _ollama_lines(
    items: AsyncGenerator[dict[str, Any], None], job: _Job, load_ns: int
) -> AsyncGenerator[dict[str, Any], None]:
    """Runner lines → Ollama lines; without streaming, one final line holding the whole text.

    With tools, text that may be a call is held back; calls come as a `tool_calls` line.
    """
    parts: list[str] = []
    logprobs: list[dict[str, Any]] = []
    calls = CallStream(tool_names(job.tools)) if job.tools else None
    async with contextlib.aclosing(items):  # closing us must close the runner stream (cancel)
        async for item in items:
            if not item.get("done"):
                text = calls.feed(item["text"]) if calls else item["text"]
                some = item.get("logprobs", [])
                if job.stream and (text or some):
                    line = {**_head(job), **_payload(job.kind, text), "done": False}
                    yield {**line, "logprobs": some} if some else line
                else:
                    parts.append(text)
                    logprobs.extend(some)
                continue
            found: list[ToolCall] = []
            if calls is not None:
                rest, found = calls.finish()
                if job.stream and (rest or found):
                    yield {**_head(job), **_payload(job.kind, rest, found), "done": False}
                elif rest:
                    parts.append(rest)
            final = _final(item, job, "".join(parts), load_ns, [] if job.stream else found)
            if logprobs:
                final["logprobs"] = logprobs
            yield final


def _final(
    item: dict[str, Any], job: _Job, text: str, load_ns: int, calls: list[ToolCall] | None = None
) -> dict[str, Any]:
    """The last line of an answer, from the runner's `done` line: counts and timings."""
    final = {
        **_head(job),
        **_payload(job.kind, text, calls),
        "done": True,
        "done_reason": item["done_reason"],
        "total_duration": time.perf_counter_ns() - job.started,
        "load_duration": load_ns,
        "prompt_eval_count": item["prompt_eval_count"],
        "prompt_eval_duration": item["prompt_eval_duration"],
        "eval_count": item["eval_count"],
        "eval_duration": item["eval_duration"],
    }
    if job.kind == "response":
        final["context"] = item.get("context", [])
    return final


def _head(job: _Job) -> dict[str, Any]:
    return stream_head(job.model.entry.name.display)


def _payload(kind: str, text: str, calls: list[ToolCall] | None = None) -> dict[str, Any]:
    payload = text_payload(kind, text)
    if calls and kind == "message":
        payload["message"]["tool_calls"] = [c.ollama() for c in calls]
    return payload
