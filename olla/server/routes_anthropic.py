"""Anthropic's Messages API: /v1/messages and /v1/messages/count_tokens.

A translator at the edge, as Ollama's: the body becomes a `GenerationRequest` through the one
gate, the answer comes out of the one render loop with Anthropic's renderer, streamed as named
server-sent events; errors are Anthropic's error objects (`middleware.error_shape`).
"""

from __future__ import annotations

from aiohttp import web

from olla.server import fields
from olla.server.anthropic_requests import MessagesJob, messages_request
from olla.server.bodies import note_ignored, read_json
from olla.server.gate import GATE, ChatPrompt, GenerationRequest
from olla.server.metrics import REQUEST_INFO
from olla.server.writer import respond
from olla.stream import anthropic
from olla.stream.assembler import render
from olla.stream.encoders import NAMED_SSE
from olla.tool_calls import tool_names


async def messages(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, fields.ANTHROPIC_MESSAGES)
    job = messages_request(body)
    note_ignored(request, job.ignored)
    info = request.get(REQUEST_INFO, {})
    async with request.app[GATE].generation(_generation(request, job), info) as admitted:
        renderer = anthropic.AnthropicRenderer(job.id, admitted.name)
        names = tool_names(job.tools) if job.tools else None
        lines = render(admitted.events, renderer, job.stream, names, admitted.reasoning)
        return await respond(request, lines, job.stream, NAMED_SSE, anthropic.error_body)


async def count_tokens(request: web.Request) -> web.Response:
    body = await read_json(request, fields.ANTHROPIC_COUNT_TOKENS)
    job = messages_request(body, counting=True)
    note_ignored(request, job.ignored)
    info = request.get(REQUEST_INFO, {})
    tokens = await request.app[GATE].count(_generation(request, job), info)
    return web.json_response({"input_tokens": tokens})


def _generation(request: web.Request, job: MessagesJob) -> GenerationRequest:
    return GenerationRequest(
        name=job.name,
        prompt=ChatPrompt(tuple(job.messages), tools=tuple(job.tools)),
        options=job.options,
        format=job.fmt,
        user=str(request.get("user") or ""),
        think=job.think,
        relax_think=True,  # Claude Code asks every model to think
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/messages", messages)
    router.add_post("/v1/messages/count_tokens", count_tokens)
