"""POST /api/chat and /api/generate: Ollama's bodies in, through the gate, Ollama's lines out."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web

from olla.api import (
    format_of,
    get_bool,
    get_model_name,
    get_str,
    keep_alive_of,
    logprobs_of,
    parse_chat_messages,
    think_of,
)
from olla.chat import Message
from olla.errors import InvalidRequest
from olla.images import images_field, with_images
from olla.server import fields
from olla.server.bodies import read_json, request_options
from olla.server.gate import (
    GATE,
    ChatPrompt,
    DirectTarget,
    GenerationRequest,
    InsertPrompt,
    Prompt,
    RawPrompt,
)
from olla.server.metrics import REQUEST_INFO
from olla.server.writer import direct_client, respond, respond_direct
from olla.stream import ollama
from olla.stream.assembler import render
from olla.tool_calls import parse_tools, tool_names


async def chat(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    body = await read_json(request, fields.CHAT)
    generation, stream = _common(request, body)
    messages = parse_chat_messages(body.get("messages") or [])
    tools = parse_tools(body.get("tools"))
    generation = replace(generation, prompt=ChatPrompt(tuple(messages), tools=tuple(tools)))
    return await _answer(request, generation, ollama.CHAT, stream, started, not messages)


async def generate(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    body = await read_json(request, fields.GENERATE)
    generation, stream = _common(request, body)
    if body.get("tools"):
        raise InvalidRequest('field "tools" belongs to /api/chat; /api/generate takes none')
    context = body.get("context")
    if context is not None and not (
        isinstance(context, list) and all(type(t) is int and t >= 0 for t in context)
    ):
        raise InvalidRequest('field "context" must be the list of token ids a reply gave')
    text, system, template, suffix = (
        get_str(body, key) for key in ("prompt", "system", "template", "suffix")
    )
    raw = get_bool(body, "raw", False)
    images = images_field(body.get("images"), "images")
    prompt: Prompt
    if suffix:
        if images:
            raise InvalidRequest('field "images": a fill-in-the-middle request (suffix) takes none')
        prompt = InsertPrompt(text or "", suffix, system, template)
    elif raw:
        prompt = RawPrompt(text or "", images)
    else:
        prompt = ChatPrompt((with_images(Message("user", text or ""), images),), system, template)
    generation = replace(generation, prompt=prompt, context=tuple(context or ()))
    empty = not (text or suffix or images)
    return await _answer(request, generation, ollama.GENERATE, stream, started, empty)


def _common(request: web.Request, body: Mapping[str, Any]) -> tuple[GenerationRequest, bool]:
    """The fields chat and generate share, checked (every error names its field), and whether
    to stream; the prompt comes after."""
    name = get_model_name(body)
    think = think_of(body.get("think"))
    logprobs = logprobs_of(body, "logprobs", "top_logprobs")
    keep_alive = keep_alive_of(body.get("keep_alive"))
    options = request_options(request, body)
    stream = get_bool(body, "stream", True)
    generation = GenerationRequest(
        name=name,
        prompt=RawPrompt(""),
        keep_alive=keep_alive,
        options=options,
        format=format_of(body.get("format")),
        logprobs=logprobs,
        user=str(request.get("user") or ""),
        think=think,
        truncate=get_bool(body, "truncate", True),
        shift=get_bool(body, "shift", True),
    )
    return generation, stream


async def _answer(
    request: web.Request,
    generation: GenerationRequest,
    kind: str,
    stream: bool,
    started: int,
    empty: bool,
) -> web.StreamResponse:
    if empty:
        return await _load_only(request, generation, kind, stream)
    tools = generation.prompt.tools if isinstance(generation.prompt, ChatPrompt) else ()
    # a plain stream goes from the runner straight to the client; tools and log-probabilities
    # need the daemon to shape each line
    plain = stream and not tools and generation.logprobs is None
    client = direct_client(request) if plain else None
    if client is not None:
        generation = replace(generation, direct=DirectTarget(client, kind))
    info = request.get(REQUEST_INFO, {})
    async with request.app[GATE].generation(generation, info) as admitted:
        renderer = ollama.OllamaRenderer(admitted.name, kind, started, admitted.load_ns)
        if admitted.direct:
            info["direct"] = True  # for the log line
            return await respond_direct(request, admitted.events, renderer.final)
        names = tool_names(list(tools)) if tools else None
        lines = render(admitted.events, renderer, stream, names, admitted.reasoning)
        return await respond(request, lines, stream)


async def _load_only(
    request: web.Request, generation: GenerationRequest, kind: str, stream: bool
) -> web.StreamResponse:
    """An empty prompt loads the model (keep_alive 0: unloads it) and answers at once."""
    gate = request.app[GATE]
    name, reason = await gate.load(generation.name, generation.options, generation.keep_alive)
    line = {**ollama.head(name), **ollama.payload(kind, "")}
    line.update(done=True, done_reason=reason)

    async def one() -> AsyncGenerator[dict[str, Any], None]:
        yield line

    return await respond(request, one(), stream)
