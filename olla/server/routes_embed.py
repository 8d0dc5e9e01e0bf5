"""Embeddings: Ollama's /api/embed and older /api/embeddings, and OpenAI's /v1/embeddings.

The runner pools and L2-normalises each vector (`olla.backends.llama_embed`, `olla.runner`);
`dimensions` keeps the first n values and normalises again, as Ollama does for models trained for
it. /api/embeddings gives the vectors of the embedding models Ollama's old runners left raw as
they come (`ModelFacts.raw_legacy_embeddings`), as Ollama still does.
"""

from __future__ import annotations

import base64
import math
import struct
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from olla.api import get_bool, get_int, get_model_name, keep_alive_of
from olla.errors import InvalidRequest
from olla.server import fields
from olla.server.bodies import read_json, request_options
from olla.server.gate import GATE, EmbedRequest
from olla.server.metrics import REQUEST_INFO


def _inputs(body: Mapping[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidRequest(f'field "{key}" must be a string or a list of strings')


async def _embed(
    request: web.Request,
    body: Mapping[str, Any],
    inputs: list[str],
    truncate: bool,
    legacy: bool = False,
) -> tuple[list[list[float]], int, int, int]:
    """(vectors, prompt tokens, load ns, total ns); no inputs: the model is only loaded."""
    started = time.perf_counter_ns()
    embedding = EmbedRequest(
        name=get_model_name(body),
        inputs=tuple(inputs),
        truncate=truncate,
        options=request_options(request, body),
        keep_alive=keep_alive_of(body.get("keep_alive")),
        user=str(request.get("user") or ""),
        legacy=legacy,
    )
    dimensions = get_int(body, "dimensions", 1)
    info = request.get(REQUEST_INFO, {})
    reply, load_seconds = await request.app[GATE].embed(embedding, info)
    vectors = [_shorten(v, dimensions) for v in reply.embeddings]
    total = time.perf_counter_ns() - started
    return vectors, reply.prompt_eval_count, int(load_seconds * 1e9), total


def _shorten(vector: list[float], dimensions: int | None) -> list[float]:
    if dimensions is None:
        return vector
    if dimensions > len(vector):
        raise InvalidRequest(
            f'field "dimensions": the model makes {len(vector)}-value embeddings; ask for fewer'
        )
    head = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in head))
    return [x / norm for x in head] if norm > 0 else head


async def embed(request: web.Request) -> web.Response:
    """Ollama's /api/embed."""
    body = await read_json(request, fields.EMBED)
    inputs = _inputs(body, "input")
    truncate = get_bool(body, "truncate", True)
    vectors, count, load_ns, total_ns = await _embed(request, body, inputs, truncate)
    return web.json_response(
        {
            "model": body.get("model") or body.get("name"),
            "embeddings": vectors,
            "total_duration": total_ns,
            "load_duration": load_ns,
            "prompt_eval_count": count,
        }
    )


async def embeddings(request: web.Request) -> web.Response:
    """Ollama's older /api/embeddings: one `prompt`, one `embedding`."""
    body = await read_json(request, fields.EMBEDDINGS)
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidRequest('field "prompt" must be a string')
    vectors, _, _, _ = await _embed(request, body, [prompt] if prompt else [], True, legacy=True)
    return web.json_response({"embedding": vectors[0] if vectors else []})


async def openai_embeddings(request: web.Request) -> web.Response:
    """OpenAI's /v1/embeddings (float or base64 encoding)."""
    body = await read_json(request, fields.OPENAI_EMBEDDINGS)
    raw = body.get("input")
    if isinstance(raw, list) and raw and not all(isinstance(v, str) for v in raw):
        raise InvalidRequest('field "input": olla embeds text; send a string or a list of strings')
    inputs = _inputs(body, "input")
    if not inputs:
        raise InvalidRequest('field "input" must be a non-empty string or list of strings')
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise InvalidRequest('field "encoding_format" must be "float" or "base64"')
    vectors, count, _, _ = await _embed(request, body, inputs, True)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(v, encoding)}
        for i, v in enumerate(vectors)
    ]
    usage = {"prompt_tokens": count, "total_tokens": count}
    return web.json_response(
        {"object": "list", "data": data, "model": body.get("model"), "usage": usage}
    )


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()  # float32 LE


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/api/embed", embed)
    router.add_post("/api/embeddings", embeddings)
    router.add_post("/v1/embeddings", openai_embeddings)
