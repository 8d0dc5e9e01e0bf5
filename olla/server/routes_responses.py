"""OpenAI's Responses API: POST /v1/responses, stateless as Ollama serves it.

The body becomes the same `GenerationRequest` as /v1/chat/completions (through the one gate),
and the runner's events go through the one render loop with `ResponsesRenderer`: a Response
object, or its typed server-sent events. Errors are OpenAI's error object (the /v1 shape).
"""

from __future__ import annotations

from aiohttp import web

from olla.server import fields
from olla.server.bodies import read_json
from olla.server.gate import GATE, ChatPrompt, GenerationRequest
from olla.server.metrics import REQUEST_INFO
from olla.server.responses_requests import parse_responses
from olla.server.writer import respond
from olla.stream.assembler import render
from olla.stream.encoders import NAMED_SSE
from olla.stream.responses import ResponsesRenderer
from olla.tool_calls import tool_names


async def create_response(request: web.Request) -> web.StreamResponse:
    """POST /v1/responses: one answer, whole or streamed as events."""
    job = parse_responses(await read_json(request, fields.OPENAI_RESPONSES))
    generation = GenerationRequest(
        name=job.name,
        prompt=ChatPrompt(job.messages, tools=job.tools),
        options=job.options,
        format=job.fmt,
        user=str(request.get("user") or ""),
        think=job.think,
        truncate=job.truncate,
    )
    info = request.get(REQUEST_INFO, {})
    async with request.app[GATE].generation(generation, info) as admitted:
        renderer = ResponsesRenderer(job.id, job.created_at, admitted.name, job.echo)
        names = tool_names(list(job.tools)) if job.tools else None
        lines = render(admitted.events, renderer, job.stream, names, admitted.reasoning)
        return await respond(request, lines, job.stream, NAMED_SSE, renderer.failed)


def add_routes(router: web.UrlDispatcher) -> None:
    """Register /v1/responses on `router`."""
    router.add_post("/v1/responses", create_response)
