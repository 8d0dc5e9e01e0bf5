"""Ollama-compatible /api/* handlers: parse, call the registry or generator, answer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from olla import __version__
from olla.api import CopyRequest, get_bool, get_model_name, parse_create
from olla.asyncutil import progress_of
from olla.errors import InvalidRequest, NotSupported
from olla.registry import describe
from olla.registry.blobs import CHUNK_SIZE, BlobStore, parse_digest
from olla.registry.create import create_model
from olla.registry.create_request import request_from_text
from olla.runtime.placement import Placement
from olla.server import fields, routes_embed, routes_generate, routes_openai
from olla.server.bodies import read_json
from olla.server.keys import MANAGER, PULLS, REGISTRY
from olla.server.metrics import metrics_route
from olla.server.writer import respond


async def root(request: web.Request) -> web.Response:
    return web.Response(text="olla is running")


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": __version__})


async def tags(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]

    def collect() -> list[dict[str, Any]]:
        return [describe.tags_entry(registry, entry) for entry in registry.list_models()]

    return web.json_response({"models": await asyncio.to_thread(collect)})


async def show(request: web.Request) -> web.Response:
    body = await read_json(request, fields.SHOW)
    name, verbose = get_model_name(body), get_bool(body, "verbose", False)
    registry = request.app[REGISTRY]

    def build() -> dict[str, Any]:
        return describe.show(registry, registry.resolve(name), verbose)

    return web.json_response(await asyncio.to_thread(build))


async def create(request: web.Request) -> web.StreamResponse:
    """Ollama's /api/create: a model from names and uploaded blobs' digests; the daemon never
    opens a path a client names (`request_from_text` refuses them)."""
    req = request_from_text(parse_create(await read_json(request, fields.CREATE)))
    registry = request.app[REGISTRY]

    def work(report: Callable[[dict[str, str]], None], cancelled: threading.Event) -> None:
        create_model(registry, req, lambda status: report({"status": status}))
        report({"status": "success"})

    return await respond(request, progress_of(work), req.stream)


async def pull(request: web.Request) -> web.StreamResponse:
    """Ollama's /api/pull: status lines while a model comes from a registry or Hugging Face."""
    body = await read_json(request, fields.PULL)
    name = body.get("model") or body.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest('"model" is required: the model to pull, e.g. llama3.2')
    stream, insecure = body.get("stream", True), body.get("insecure", False)
    if not isinstance(stream, bool) or not isinstance(insecure, bool):
        raise InvalidRequest('"stream" and "insecure" must be true or false')
    return await respond(request, request.app[PULLS].follow(name, insecure), stream)


async def push(request: web.Request) -> web.Response:
    raise NotSupported(
        "olla does not push models: it pulls from Ollama's registry and Hugging Face; "
        "share a model by uploading its GGUF to a Hugging Face repository"
    )


async def copy(request: web.Request) -> web.Response:
    req = CopyRequest.from_json(await read_json(request, fields.COPY))
    await asyncio.to_thread(request.app[REGISTRY].copy, req.source, req.destination)
    return web.Response()


async def delete(request: web.Request) -> web.Response:
    name = get_model_name(await read_json(request, fields.DELETE))
    await asyncio.to_thread(request.app[REGISTRY].delete, name)
    return web.Response()


async def blob_head(request: web.Request) -> web.Response:
    digest = parse_digest(request.match_info["digest"])
    exists = request.app[REGISTRY].blobs.exists(digest)
    return web.Response(status=200 if exists else 404)


async def blob_post(request: web.Request) -> web.Response:
    digest = parse_digest(request.match_info["digest"])
    registry = request.app[REGISTRY]
    if not registry.blobs.exists(digest):
        await _receive_blob(request, registry.blobs, digest)
    registry.pin(digest)
    return web.Response(status=201)


async def _receive_blob(request: web.Request, blobs: BlobStore, digest: str) -> None:
    """Stream the body into the store under `digest`, checked on commit.

    A body longer than the disk's free space is refused before its first byte (507, as a pull
    is); a client that leaves cancels this handler (`handler_cancellation`), and its temp file
    goes with it.
    """
    if request.content_length is not None:
        await asyncio.to_thread(blobs.check_room, request.content_length)
    writer = await asyncio.to_thread(blobs.writer, digest)
    try:
        async for chunk in request.content.iter_chunked(CHUNK_SIZE):
            await _finish_in_thread(writer.write, chunk)
        await _finish_in_thread(writer.commit)
    finally:
        writer.abort()  # a no-op once committed


T = TypeVar("T")


async def _finish_in_thread(call: Callable[..., T], *args: object) -> T:
    """`call(*args)` in a worker thread; if this task is cancelled meanwhile, wait for the
    thread before re-raising, so that cleanup never races it over the same file."""
    future = asyncio.ensure_future(asyncio.to_thread(call, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation is what this task reports
        raise


async def ps(request: web.Request) -> web.Response:
    """The loaded models, as Ollama's /api/ps lists them."""
    registry, manager = request.app[REGISTRY], request.app[MANAGER]
    now, wall = manager.now(), time.time()

    def collect() -> list[dict[str, Any]]:
        out = []
        for loaded in manager.loaded():
            entry = describe.tags_entry(registry, loaded.entry)
            expires = loaded.expires_at
            if expires is None:  # leased: keep_alive counts from the end of its requests
                expires = None if loaded.keep_alive < 0 else now + loaded.keep_alive
            memory = loaded.actual or loaded.estimate
            out.append(
                {
                    "name": entry["name"],
                    "model": entry["model"],
                    "size": memory.total if memory else entry["size"],
                    "digest": entry["digest"],
                    "details": entry["details"],
                    "expires_at": describe.timestamp(
                        wall + (expires - now) if expires else _FOREVER
                    ),
                    "size_vram": memory.gpu if memory else 0,
                    "context_length": loaded.key.num_ctx,
                    # olla's own: the estimate made before loading, and what llama.cpp allocated
                    "memory": {
                        "estimate": loaded.estimate.to_json() if loaded.estimate else None,
                        "actual": loaded.actual.to_json() if loaded.actual else None,
                    },
                    "placement": _placement(loaded.placement),
                }
            )
        return out

    return web.json_response({"models": await asyncio.to_thread(collect)})


def _placement(placement: Placement | None) -> dict[str, Any] | None:
    if placement is None:
        return None
    return {"layers": placement.layers, "gpu_layers": placement.gpu_layers, "gpu": placement.gpu}


_FOREVER = 253370764800.0  # 9999-01-01: when a model kept with keep_alive -1 expires


def add_routes(app: web.Application) -> None:
    """Register every /api/* route on `app`."""
    router = app.router
    router.add_get("/", root)
    router.add_get("/api/version", version)
    router.add_get("/api/tags", tags)
    router.add_get("/api/ps", ps)
    router.add_post("/api/show", show)
    router.add_post("/api/create", create)
    router.add_post("/api/pull", pull)
    router.add_post("/api/push", push)
    router.add_post("/api/copy", copy)
    router.add_delete("/api/delete", delete)
    router.add_head("/api/blobs/{digest}", blob_head)
    router.add_post("/api/blobs/{digest}", blob_post)
    router.add_post("/api/chat", routes_generate.chat)
    router.add_post("/api/generate", routes_generate.generate)
    routes_openai.add_routes(router)
    routes_embed.add_routes(router)
    router.add_get("/metrics", metrics_route)
