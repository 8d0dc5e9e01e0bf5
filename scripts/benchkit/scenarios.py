"""The scenarios: levels of concurrency, a shared prefix, and a long prompt's interference with
running streams. Each measures one run on a started server."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

import aiohttp

from benchkit.load import CpuSample, RequestResult, pct, safe_div, stream_into, stream_request
from benchkit.prompts import ScenarioTexts
from benchkit.servers import ServerProcess


@dataclass
class LevelStats:
    """One concurrency level on one server: aggregates of one run, or medians of several."""

    tok_s: float
    ttft_p50: float
    ttft_p99: float
    itl_p50: float
    itl_p99: float
    tokens_per_request: float
    requests: int
    errors: int
    other_load: float = float("nan")  # cores busy with processes other than ours, on average
    first_error: str | None = None

    @classmethod
    def from_run(cls, results: list[RequestResult], wall: float) -> LevelStats:
        """Aggregates of one run: failed requests count as errors and add no figures."""
        ok = [r for r in results if r.error is None]
        ttfts = [r.ttft for r in ok if r.ttft is not None]
        itls = [gap for r in ok for gap in r.itls]
        tokens = sum(r.num_tokens for r in ok)
        errors = [r.error for r in results if r.error is not None]
        return cls(
            tok_s=tokens / wall if wall > 0 else float("nan"),
            ttft_p50=pct(ttfts, 50),
            ttft_p99=pct(ttfts, 99),
            itl_p50=pct(itls, 50),
            itl_p99=pct(itls, 99),
            tokens_per_request=tokens / len(ok) if ok else float("nan"),
            requests=len(results),
            errors=len(errors),
            first_error=errors[0] if errors else None,
        )


async def run_level(
    session: aiohttp.ClientSession,
    server: ServerProcess,
    prompts: list[str],
    concurrency: int,
    rep: int,
) -> LevelStats:
    """C clients, each sending N requests back to back; tok/s over the level's wall time."""
    opts = server.opts
    n = opts.requests_per_client
    # Tagged with the level and the run, so that no prompt is in any server's cache already:
    # every run measures cold prompts, as the first would.
    tag = f"[{concurrency}-{rep + 1}] "

    async def client(i: int) -> list[RequestResult]:
        return [
            await stream_request(
                session, server, tag + prompts[(i * n + j) % len(prompts)], opts.max_tokens
            )
            for j in range(n)
        ]

    before = CpuSample.take(server.pgid)
    start = time.perf_counter()
    per_client = await asyncio.gather(*(client(i) for i in range(concurrency)))
    wall = time.perf_counter() - start
    stats = LevelStats.from_run([r for rs in per_client for r in rs], wall)
    return replace(stats, other_load=CpuSample.take(server.pgid).other_load_since(before))


@dataclass
class PrefixStats:
    """Shared prefix: TTFT of the first request (cold) and of the second (same prefix)."""

    prefix_tokens: int
    ttft_first: float
    ttft_second: float
    ratio: float
    errors: int
    first_error: str | None = None


async def run_shared_prefix(
    session: aiohttp.ClientSession, server: ServerProcess, texts: ScenarioTexts, rep: int
) -> PrefixStats:
    """Request 1 with a fresh ~1,500-token prefix, then request 2 with it and another question."""
    # A new session number per repeat, in the first tokens, so no earlier run can be cached.
    prefix = f"Session {rep + 1} of the bench on {time.time():.6f}.\n{texts.handbook}\n\n"
    questions = ("When does the museum open on Sundays?", "Can I bring my dog to the museum?")
    results = [
        await stream_request(session, server, f"{prefix}Question: {q}\nAnswer:", 8)
        for q in questions
    ]
    errors = [r.error for r in results if r.error]
    first, second = (r.ttft * 1000 if r.ttft is not None else float("nan") for r in results)
    return PrefixStats(
        texts.handbook_tokens,
        first,
        second,
        safe_div(second, first),
        len(errors),
        errors[0] if errors else None,
    )


@dataclass
class InterferenceStats:
    """Running streams' ITL before and while a long prompt is admitted."""

    streams: int
    long_prompt_tokens: int
    itl_p50_before: float
    itl_p50_window: float
    itl_p99_window: float
    ratio: float  # window p99 / p50 before
    window_ms: float  # long prompt sent -> its first token (its TTFT)
    streams_ended_early: int
    errors: int
    first_error: str | None = None


async def wait_for_chunks(streams: list[RequestResult], count: int, timeout: float) -> None:
    """Until every stream has `count` chunks or has ended (a serial server runs them in turn)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if all(len(s.chunk_times) >= count or s.finished is not None for s in streams):
            return
        await asyncio.sleep(0.01)


def interference_stats(
    streams: list[RequestResult], long: RequestResult, long_tokens: int
) -> InterferenceStats:
    """Gaps that end before the long prompt is sent, and gaps that overlap its admission."""
    start, end = long.sent, long.chunk_times[0] if long.chunk_times else long.finished or 0.0
    before: list[float] = []
    window: list[float] = []
    for s in streams:
        for a, b in zip(s.chunk_times, s.chunk_times[1:], strict=False):
            if b <= start:
                before.append(b - a)
            elif a < end:
                window.append(b - a)
    errors = [r.error for r in (*streams, long) if r.error]
    early = sum(1 for s in streams if s.finished is not None and s.finished < end and not s.error)
    p50 = pct(before, 50)
    return InterferenceStats(
        streams=len(streams),
        long_prompt_tokens=long_tokens,
        itl_p50_before=p50,
        itl_p50_window=pct(window, 50),
        itl_p99_window=pct(window, 99),
        ratio=safe_div(pct(window, 99), p50),
        window_ms=(end - start) * 1000,
        streams_ended_early=early,
        errors=len(errors),
        first_error=errors[0] if errors else None,
    )


async def run_interference(
    session: aiohttp.ClientSession,
    server: ServerProcess,
    prompts: list[str],
    texts: ScenarioTexts,
    rep: int,
) -> InterferenceStats:
    """S streams run; once each has 16 chunks, a 2,000-token prompt is sent; streams then stop."""
    opts = server.opts
    streams = [RequestResult() for _ in range(opts.interference_streams)]
    # as long as the context allows: a stream that ends inside the window measures nothing
    length = max(opts.ctx_per_seq - 128, opts.max_tokens)
    tasks = [
        asyncio.create_task(stream_into(s, session, server, f"[s-{rep + 1}] {prompts[i]}", length))
        for i, s in enumerate(streams)
    ]
    try:
        await wait_for_chunks(streams, 16, opts.request_timeout)
        prompt = f"Session {rep + 1} of the bench on {time.time():.6f}.\n{texts.long_prompt}\n"
        long = await stream_request(session, server, prompt + "Summary:", 4)
        await asyncio.sleep(0.3)  # let the gaps in flight at the first token land
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(1.0)  # let the server drop the cancelled streams
    return interference_stats(streams, long, texts.long_prompt_tokens)
