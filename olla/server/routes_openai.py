"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models.

Requests go through the same gate as /api/chat and /api/generate (Ollama does the same);
streaming is server-sent events ending in `data: [DONE]`, and errors are OpenAI error objects.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from olla.chat import Message
from olla.errors import InvalidRequest, ModelNotFound, NotFound, NotSupported
from olla.registry.names import ModelName
from olla.registry.store import ModelEntry
from olla.server import fields
from olla.server.bodies import read_json
from olla.server.gate import GATE, ChatPrompt, GenerationRequest, InsertPrompt, Prompt
from olla.server.keys import REGISTRY
from olla.server.metrics import REQUEST_INFO
from olla.server.openai_requests import Completion, completion, messages, tool_choice
from olla.server.writer import respond
from olla.stream import openai
from olla.stream.assembler import render
from olla.stream.encoders import SSE
from olla.tool_calls import tool_names


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, fields.OPENAI_CHAT)
    job = completion(body, openai.CHAT, "chatcmpl")
    chat = messages(body.get("messages"))
    tool_choice(body, job)
    return await _answer(request, job, ChatPrompt(tuple(chat), tools=tuple(job.tools)))


async def completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, fields.OPENAI_COMPLETIONS)
    job = completion(body, openai.COMPLETION, "cmpl")
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
    if suffix:
        return await _answer(request, job, InsertPrompt(prompt, suffix))
    return await _answer(request, job, ChatPrompt((Message("user", prompt),)))


async def _answer(request: web.Request, job: Completion, prompt: Prompt) -> web.StreamResponse:
    generation = GenerationRequest(
        name=job.name,
        prompt=prompt,
        options=job.options,
        format=job.fmt,
        logprobs=job.logprobs,
        user=str(request.get("user") or ""),
        think=job.think,
    )
    info = request.get(REQUEST_INFO, {})
    async with request.app[GATE].generation(generation, info) as admitted:
        renderer = openai.OpenAIRenderer(
            job.kind, job.id, job.created, admitted.name, job.logprobs, job.include_usage
        )
        names = tool_names(job.tools) if job.tools else None
        lines = render(admitted.events, renderer, job.stream, names, admitted.reasoning)
        return await respond(request, lines, job.stream, SSE, openai.error_body)


async def models(request: web.Request) -> web.Response:
    entries = await asyncio.to_thread(request.app[REGISTRY].list_models)
    return web.json_response({"object": "list", "data": [_model(e) for e in entries]})


async def model(request: web.Request) -> web.Response:
    name = ModelName.parse(request.match_info["name"])
    try:
        entry = await asyncio.to_thread(request.app[REGISTRY].entry, name)
    except ModelNotFound:
        # OpenAI's wording (ModelNotFound's own would wrap it in a second sentence)
        raise NotFound(f"The model '{request.match_info['name']}' does not exist") from None
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
