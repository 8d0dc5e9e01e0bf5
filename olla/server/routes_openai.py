"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models.

Requests map onto the same runner streams as /api/chat and /api/generate (Ollama does the same);
streaming is server-sent events ending in `data: [DONE]`, and errors are OpenAI error objects
(see `olla.server.middleware`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from olla.api import MESSAGE_ROLES, get_bool, get_int, get_model_name, tool_call_of
from olla.chat import Message
from olla.errors import InvalidRequest, ModelNotFound, NotSupported, OllaError
from olla.registry.names import ModelName
from olla.registry.store import ModelEntry, ResolvedModel
from olla.runtime.prompting import chat_prompt
from olla.server import fields
from olla.server.bodies import read_json
from olla.server.keys import CHAT_FORMATS, REGISTRY
from olla.server.middleware import error_body, openai_error
from olla.server.routes_generate import generation, insert_prompt, logprobs_of, model_path
from olla.server.streaming import stream_response
from olla.tool_calls import CallStream, ToolCall, call_schema, find_calls, parse_tools, tool_names

log = logging.getLogger(__name__)

Items = AsyncGenerator[dict[str, Any], None]


@dataclass
class _Completion:
    """What both completion routes share once the body is parsed."""

    name: ModelName
    options: dict[str, Any]
    stream: bool
    include_usage: bool
    fmt: str | dict[str, Any] | None
    kind: str  # "chat.completion" or "text_completion"
    id: str
    created: int
    tools: list[dict[str, Any]] = field(default_factory=list)  # offered, and parsed for calls
    logprobs: int | None = None  # alternatives per token to report; None: off


def _number(body: Mapping[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise InvalidRequest(f'field "{key}" must be a number from {lo:g} to {hi:g}')
    return float(value)


def _stop(body: Mapping[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise InvalidRequest('field "stop" must be a non-empty string or a list of them')
    return stop


def _response_format(body: Mapping[str, Any]) -> str | dict[str, Any] | None:
    """`response_format` as Ollama's `format`: "json", a JSON schema, or nothing."""
    value = body.get("response_format")
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest('field "response_format.json_schema.schema" must be an object')
        return schema
    raise InvalidRequest(
        'field "response_format.type" must be "text", "json_object" or "json_schema"'
    )


def _completion(body: Mapping[str, Any], kind: str, prefix: str) -> _Completion:
    """Validate what chat and text completions share; every error names its field."""
    if (n := get_int(body, "n", 1)) is not None and n != 1:
        raise InvalidRequest('field "n": olla generates one choice per request; send n = 1')
    for unsupported in ("functions", "logit_bias"):
        if body.get(unsupported):
            raise NotSupported(f'field "{unsupported}" is not supported by this version of olla')
    options: dict[str, Any] = {}
    for key, lo, hi in (
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("presence_penalty", -2, 2),
        ("frequency_penalty", -2, 2),
    ):
        if (number := _number(body, key, lo, hi)) is not None:
            options[key] = number
    if (seed := get_int(body, "seed", -(2**63))) is not None:
        options["seed"] = seed
    limit = get_int(body, "max_completion_tokens", 1)
    limit = limit if limit is not None else get_int(body, "max_tokens", 1)
    if limit is not None:
        options["num_predict"] = limit
    if (stop := _stop(body)) is not None:
        options["stop"] = stop
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise InvalidRequest('field "stream_options" must be an object')
    if kind == "chat.completion":
        logprobs = logprobs_of(body, "logprobs", "top_logprobs")
    else:  # the legacy completions take "logprobs": n (0 to 5)
        n_best = get_int(body, "logprobs", 0, 5)
        logprobs = n_best
    return _Completion(
        logprobs=logprobs,
        name=get_model_name(body),
        options=options,
        stream=get_bool(body, "stream", False),
        include_usage=get_bool(stream_options or {}, "include_usage", False),
        fmt=_response_format(body),
        kind=kind,
        id=f"{prefix}-{secrets.token_hex(12)}",
        created=int(time.time()),
    )


def _messages(raw: Any) -> list[Message | dict[str, Any]]:
    """OpenAI messages: content as a string or a list of text parts; `developer` is system;
    an assistant's `tool_calls` and a tool's `tool_call_id` kept for the template."""
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest('field "messages" must be a non-empty list of messages')
    out: list[Message | dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name, for the tool messages after it
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidRequest(f"messages[{i}] must be an object with role and content")
        role = "system" if item.get("role") == "developer" else item.get("role")
        if role not in MESSAGE_ROLES:
            raise InvalidRequest(
                f"messages[{i}].role must be one of system, developer, user, assistant, tool"
            )
        content = _content(item.get("content"), f"messages[{i}].content")
        calls = item.get("tool_calls")
        if role == "assistant" and calls:
            if not isinstance(calls, list):
                raise InvalidRequest(f"messages[{i}].tool_calls must be a list")
            parsed = [
                tool_call_of(c, f"messages[{i}].tool_calls[{j}]") for j, c in enumerate(calls)
            ]
            names.update({c["id"]: c["function"]["name"] for c in parsed if "id" in c})
            out.append({"role": role, "content": content, "tool_calls": parsed})
        elif role == "tool":
            call_id = item.get("tool_call_id")
            name = item.get("name") or names.get(call_id if isinstance(call_id, str) else "")
            out.append(
                {
                    "role": role,
                    "content": content,
                    "tool_call_id": call_id,
                    "tool_name": name,
                    "name": name,
                }
            )
        else:
            out.append(Message(role, content))
    return out


def _tool_choice(body: Mapping[str, Any], job: _Completion) -> None:
    """Offer `tools`; tool_choice "none" offers none, "required" or a named function forces a
    call through a grammar."""
    tools = parse_tools(body.get("tools"))
    choice = body.get("tool_choice", "auto")
    if choice in (None, "auto"):
        job.tools = tools
        return
    if choice == "none":
        return
    name = None
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise InvalidRequest(
                'field "tool_choice" must be "auto", "none", "required" or '
                '{"type": "function", "function": {"name": ...}}'
            )
    elif choice != "required":
        raise InvalidRequest('field "tool_choice" must be "auto", "none", "required" or a function')
    if not tools:
        raise InvalidRequest('field "tool_choice" asks for a call, but "tools" is empty')
    if job.fmt is not None:
        raise InvalidRequest('send "response_format" or a forced "tool_choice", not both')
    job.tools, job.fmt = tools, call_schema(tools, name)


def _content(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise InvalidRequest(f"{where} must be a string or a list of content parts")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image_url", "input_audio", "file"):
            raise InvalidRequest(f"{where}[{j}]: olla's models here read text only, not {kind}")
        else:
            raise InvalidRequest(f'{where}[{j}] must be {{"type": "text", "text": "..."}}')
    return "".join(texts)


async def _resolve(request: web.Request, job: _Completion) -> ResolvedModel:
    model = await asyncio.to_thread(request.app[REGISTRY].resolve, job.name)
    job.options = {**model.parameters, **job.options}
    return model


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, fields.OPENAI_CHAT)
    job = _completion(body, "chat.completion", "chatcmpl")
    messages = _messages(body.get("messages"))
    _tool_choice(body, job)
    model = await _resolve(request, job)
    fmt = await asyncio.to_thread(request.app[CHAT_FORMATS].get, model_path(model))
    return await _answer(request, job, model, chat_prompt(model, fmt, messages, tools=job.tools))


async def completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, fields.OPENAI_COMPLETIONS)
    job = _completion(body, "text_completion", "cmpl")
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise InvalidRequest('field "suffix" must be a string')
    if body.get("echo"):
        raise NotSupported('field "echo" is not supported by this version of olla')
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise InvalidRequest('field "prompt" must be a non-empty string (one prompt per request)')
    job.options.setdefault("num_predict", 16)  # OpenAI's default max_tokens for completions
    model = await _resolve(request, job)
    if suffix:
        return await _answer(request, job, model, insert_prompt(model, prompt, suffix, None, None))
    fmt = await asyncio.to_thread(request.app[CHAT_FORMATS].get, model_path(model))
    return await _answer(request, job, model, chat_prompt(model, fmt, [Message("user", prompt)]))


async def _answer(
    request: web.Request, job: _Completion, model: ResolvedModel, prompt: str
) -> web.StreamResponse:
    async with generation(
        request, model, job.options, None, prompt, job.fmt, logprobs=job.logprobs
    ) as (items, _):
        async with contextlib.aclosing(items):
            if not job.stream:
                return web.json_response(await _whole(job, model, items))
            return await _events(request, job, model, items)


def _head(job: _Completion, model: ResolvedModel, chunk: bool) -> dict[str, Any]:
    kind = job.kind + (".chunk" if chunk and job.kind == "chat.completion" else "")
    return {
        "id": job.id,
        "object": kind,
        "created": job.created,
        "model": model.entry.name.display,
        "system_fingerprint": "fp_olla",
    }


def _choice(
    job: _Completion,
    text: str | None,
    finish: str | None,
    chunk: bool,
    calls: list[ToolCall] | None = None,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    shown = _logprobs(job, logprobs or [])
    if job.kind == "text_completion":
        return {"index": 0, "text": text or "", "logprobs": shown, "finish_reason": finish}
    if not chunk:
        # with tool calls and no text, content is null (as OpenAI), else the text
        message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
        if calls:
            message["tool_calls"] = [
                {k: v for k, v in c.openai(i).items() if k != "index"} for i, c in enumerate(calls)
            ]
        return {"index": 0, "message": message, "logprobs": shown, "finish_reason": finish}
    delta: dict[str, Any] = {} if text is None else {"content": text}
    if calls:
        delta["tool_calls"] = [c.openai(i) for i, c in enumerate(calls)]
    return {"index": 0, "delta": delta, "logprobs": shown, "finish_reason": finish}


def _logprobs(job: _Completion, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The runner's per-token entries as OpenAI shows them: chat's `content` list, or the
    legacy completions' parallel lists."""
    if job.logprobs is None or not entries:
        return None
    if job.kind == "chat.completion":
        return {"content": entries}
    offsets, at = [], 0
    for entry in entries:
        offsets.append(at)
        at += len(entry["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        "text_offset": offsets,
    }


def _usage(final: Mapping[str, Any]) -> dict[str, int]:
    prompt, completion = final["prompt_eval_count"], final["eval_count"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _finish(final: Mapping[str, Any], calls: list[ToolCall] | None = None) -> str:
    if calls:
        return "tool_calls"
    return "length" if final.get("done_reason") == "length" else "stop"


async def _whole(job: _Completion, model: ResolvedModel, items: Items) -> dict[str, Any]:
    parts: list[str] = []
    entries: list[dict[str, Any]] = []
    async for item in items:
        if not item.get("done"):
            parts.append(item["text"])
            entries.extend(item.get("logprobs", []))
            continue
        text, calls = "".join(parts), list[ToolCall]()
        if job.tools:
            text, calls = find_calls(text, tool_names(job.tools))
        choice = _choice(
            job, text, _finish(item, calls), chunk=False, calls=calls, logprobs=entries
        )
        return {**_head(job, model, chunk=False), "choices": [choice], "usage": _usage(item)}
    raise OllaError("the model runner ended the answer without a final line")


async def _events(
    request: web.Request, job: _Completion, model: ResolvedModel, items: Items
) -> web.StreamResponse:
    """Server-sent events: a role chunk, text chunks, tool calls, the finish, usage if asked,
    [DONE]."""
    first = await anext(items, None)  # errors before any output get a proper status
    response = stream_response(
        request, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)

    async def send(data: Mapping[str, Any] | str) -> None:
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        await response.write(f"data: {text}\n\n".encode())

    head = _head(job, model, chunk=True)
    stream = CallStream(tool_names(job.tools)) if job.tools else None
    try:
        if job.kind == "chat.completion":
            role = {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            await send({**head, "choices": [role]})
        item = first
        while item is not None:
            if not item.get("done"):
                text = stream.feed(item["text"]) if stream else item["text"]
                entries = item.get("logprobs")
                if text or entries:
                    choice = _choice(job, text, None, chunk=True, logprobs=entries)
                    await send({**head, "choices": [choice]})
            else:
                calls: list[ToolCall] = []
                if stream is not None:
                    rest, calls = stream.finish()
                    if rest or calls:
                        choice = _choice(job, rest or None, None, chunk=True, calls=calls)
                        await send({**head, "choices": [choice]})
                finish = _choice(job, None, _finish(item, calls), chunk=True)
                await send({**head, "choices": [finish]})
                if job.include_usage:
                    await send({**head, "choices": [], "usage": _usage(item)})
            item = await anext(items, None)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:
        status, body = error_body(exc)
        log.warning("stream failed after start: %s", body["error"], extra={"status": status})
        await send(openai_error(status, body["error"]))
    await send("[DONE]")
    await response.write_eof()
    return response


async def models(request: web.Request) -> web.Response:
    entries = await asyncio.to_thread(request.app[REGISTRY].list_models)
    return web.json_response({"object": "list", "data": [_model(e) for e in entries]})


async def model(request: web.Request) -> web.Response:
    name = ModelName.parse(request.match_info["name"])
    try:
        entry = await asyncio.to_thread(request.app[REGISTRY].entry, name)
    except ModelNotFound:
        raise ModelNotFound(f"The model '{request.match_info['name']}' does not exist") from None
    return web.json_response(_model(entry))


def _model(entry: ModelEntry) -> dict[str, Any]:
    return {
        "id": entry.name.display,
        "object": "model",
        "created": int(entry.modified),
        "owned_by": entry.name.namespace,
    }


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/chat/completions", chat_completions)
    router.add_post("/v1/completions", completions)
    router.add_get("/v1/models", models)
    router.add_get("/v1/models/{name:.+}", model)
