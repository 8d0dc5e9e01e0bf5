"""The vision scenario: one image request while text streams run, then the same again, then an
image alone; its time to first token and the streams' inter-token latency around it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from benchkit.load import RequestResult, pct, post_stream, stream_into
from benchkit.scenarios import wait_for_chunks
from benchkit.servers import ServerProcess
from benchkit.vision_images import image_message, make_png

# An image request's answer: a few tokens, as TTFT is what is measured
IMAGE_MAX_TOKENS = 8

Chat = Callable[[list[dict[str, Any]], int], dict[str, Any]]


@dataclass
class VisionRun:
    """One round on one server (milliseconds); medians of several have the same shape.

    `cold` is an image the server has not seen, sent while the streams run; `repeat` the same
    request again right after; `alone` another new image with nothing else running, then again.
    The ITL figures are the streams' gaps: those that ended before the image was sent, and those
    that overlap its window (sent to first token).
    """

    ttft_cold: float
    ttft_repeat: float
    ttft_alone: float
    ttft_alone_repeat: float
    itl_p50_before: float
    itl_p99_before: float
    itl_max_before: float
    itl_p50_cold: float
    itl_p99_cold: float
    itl_max_cold: float
    itl_p50_repeat: float
    itl_p99_repeat: float
    itl_max_repeat: float
    streams: int
    streams_ended_early: int
    errors: int
    other_load: float = float("nan")  # cores busy with other processes, on average
    first_error: str | None = None


def first_token_at(r: RequestResult) -> float:
    """When the request's first text arrived (its end if none did)."""
    return r.chunk_times[0] if r.chunk_times else r.finished or r.sent


def ttft_ms(r: RequestResult) -> float:
    """Its time to first token in ms; NaN if it failed or gave no text."""
    return r.ttft * 1000 if r.ttft is not None and r.error is None else float("nan")


def gaps(streams: list[RequestResult], start: float, end: float) -> list[float]:
    """The streams' inter-token gaps that overlap [start, end) (seconds)."""
    return [
        b - a
        for s in streams
        for a, b in zip(s.chunk_times, s.chunk_times[1:], strict=False)
        if b > start and a < end
    ]


def gap_figures(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max in ms; NaN for none."""
    return pct(values, 50), pct(values, 99), pct(values, 100)


def vision_run(
    streams: list[RequestResult],
    cold: RequestResult,
    repeat: RequestResult,
    alone: tuple[RequestResult, RequestResult],
) -> VisionRun:
    """The figures of one round from its timed requests."""
    before = [
        b - a
        for s in streams
        for a, b in zip(s.chunk_times, s.chunk_times[1:], strict=False)
        if b <= cold.sent
    ]
    in_cold = gaps(streams, cold.sent, first_token_at(cold))
    in_repeat = gaps(streams, repeat.sent, first_token_at(repeat))
    end = first_token_at(repeat)
    errors = [r.error for r in (*streams, cold, repeat, *alone) if r.error]
    return VisionRun(
        ttft_ms(cold),
        ttft_ms(repeat),
        ttft_ms(alone[0]),
        ttft_ms(alone[1]),
        *gap_figures(before),
        *gap_figures(in_cold),
        *gap_figures(in_repeat),
        streams=len(streams),
        streams_ended_early=sum(
            1 for s in streams if s.finished is not None and s.finished < end and not s.error
        ),
        errors=len(errors),
        first_error=errors[0] if errors else None,
    )


async def image_twice(
    session: aiohttp.ClientSession, server: ServerProcess, chat: Chat, seed: int
) -> tuple[RequestResult, RequestResult]:
    """A new image's request, then the same request again once its answer is in."""
    body = chat([image_message(make_png(seed))], IMAGE_MAX_TOKENS)
    first = await post_stream(RequestResult(), session, server, body, IMAGE_MAX_TOKENS)
    await asyncio.sleep(0.3)  # the streams' gaps in flight at its end land first
    second = await post_stream(RequestResult(), session, server, body, IMAGE_MAX_TOKENS)
    return first, second


async def run_vision(
    session: aiohttp.ClientSession,
    server: ServerProcess,
    chat: Chat,
    prompts: list[str],
    rep: int,
) -> VisionRun:
    """S text streams; once each has 16 chunks, an image twice; then an image alone, twice."""
    opts = server.opts
    streams = [RequestResult() for _ in range(opts.interference_streams)]
    # as long as the context allows: a stream that ends inside a window measures nothing
    length = opts.ctx_per_seq - 256
    tasks = [
        asyncio.create_task(stream_into(s, session, server, f"[v-{rep + 1}] {prompts[i]}", length))
        for i, s in enumerate(streams)
    ]
    try:
        await wait_for_chunks(streams, 16, opts.request_timeout)
        cold, repeat = await image_twice(session, server, chat, seed=2 * rep)
        await asyncio.sleep(0.3)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(1.0)  # let the server drop the cancelled streams
    alone = await image_twice(session, server, chat, seed=2 * rep + 1)
    return vision_run(streams, cold, repeat, alone)
