"""`GET /metrics` (Prometheus text format) and the one log line per request.

Counters and histograms are fed as requests pass (`access_middleware`, and `observe_stream`
around every runner stream, for time to first token and the gaps between tokens); what the
loaded models hold (sequences, KV blocks, prefix-cache hits) is what each runner answered last:
a scrape asks them again but does not wait for the answers. Everything lives in the app's own
registry, none in module globals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from olla.errors import Interrupted, OllaError
from olla.runtime.manager import ModelManager
from olla.runtime.runner_client import RunnerClient
from olla.server.keys import MANAGER
from olla.wire.messages import Chunk, Done, Event

log = logging.getLogger("olla.access")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_GAPS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
CLIENT_CLOSED = Interrupted.status  # 499, nginx's "client closed request"


@dataclass(frozen=True)
class RunnerStats:
    """What a runner answered to `stats`, and when (by the clock of `Metrics`)."""

    runner: RunnerClient  # who said it: a model loaded again starts without stats
    stats: dict[str, Any]
    at: float


@dataclass
class Metrics:
    """olla's Prometheus metrics, in a registry of their own.

    Args:
        clock: monotonic seconds, for the age of runners' stats (a seam for tests).
        stats_timeout: how long a question to a runner stays open before it is asked again.
    """

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    clock: Callable[[], float] = time.monotonic
    stats_timeout: float = 5.0
    _last: dict[str, RunnerStats] = field(default_factory=dict, init=False, repr=False)
    _asking: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("olla_requests", "HTTP requests", ["route", "status"], registry=r)
        self.request_seconds = Histogram(
            "olla_request_seconds", "HTTP request duration", ["route"], buckets=_LATENCY, registry=r
        )
        self.ttft = Histogram(
            "olla_time_to_first_token_seconds",
            "request to first token",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.itl = Histogram(
            "olla_inter_token_seconds",
            "gap between a stream's tokens",
            ["model"],
            buckets=_GAPS,
            registry=r,
        )
        self.tokens = Counter(
            "olla_tokens", "tokens in (prompt) and out (completion)", ["model", "kind"], registry=r
        )
        self.user_requests = Counter("olla_user_requests", "requests by user", ["user"], registry=r)
        self.user_tokens = Counter(
            "olla_user_tokens", "tokens by user", ["user", "kind"], registry=r
        )
        gauge = lambda name, text, labels: Gauge(name, text, labels, registry=r)  # noqa: E731
        self.queue = gauge("olla_queue_requests", "requests waiting for a model", ["model"])
        self.sequences = gauge("olla_sequences", "sequences in the engine", ["model", "state"])
        self.blocks = gauge("olla_kv_blocks", "KV cache blocks", ["model", "state"])
        hits = "prompt tokens found in the prefix cache"
        self.prefix_hit_rate = gauge("olla_prefix_cache_hit_rate", hits, ["model"])
        self.loaded = gauge("olla_loaded_models", "models loaded", [])
        self.stats_age = gauge(
            "olla_runner_stats_age_seconds",
            "age of the KV, sequence and prefix-cache figures: since the runner last answered",
            ["model"],
        )
        self.memory = gauge(
            "olla_model_memory_bytes", "what a loaded model holds", ["model", "device"]
        )

    def refresh(self, manager: ModelManager) -> None:
        """Set the gauges from the manager and the stats each runner gave last, and ask the
        runners for fresh ones in the background: a stopped or busy runner never holds a
        scrape, which serves what is known (`olla_runner_stats_age_seconds` says how old)."""
        loaded = manager.loaded()
        for family in (
            self.queue,
            self.sequences,
            self.blocks,
            self.prefix_hit_rate,
            self.memory,
            self.stats_age,
        ):
            family.clear()  # models that are gone must not linger
        self.loaded.set(len(loaded))
        for name, count in manager.waiting().items():
            self.queue.labels(name).set(count)
        now = self.clock()
        for model in loaded:
            runner = model.runner
            if runner is None:
                continue
            self._ask(model.name, runner)
            memory = model.actual or (model.placement.memory if model.placement else None)
            if memory is not None:
                self.memory.labels(model.name, "gpu").set(memory.gpu)
                self.memory.labels(model.name, "ram").set(memory.total - memory.gpu)
            known = self._last.get(model.name)
            if known is not None and known.runner is runner:
                self._set_stats(model.name, known.stats)
                self.stats_age.labels(model.name).set(now - known.at)
        for gone in set(self._last) - {m.name for m in loaded}:
            del self._last[gone]

    def _set_stats(self, name: str, stats: dict[str, Any]) -> None:
        for state in ("running", "waiting"):
            self.sequences.labels(name, state).set(stats.get(state, 0))
        for state in ("used", "free", "cached"):
            self.blocks.labels(name, state).set(stats.get(f"blocks_{state}", 0))
        self.prefix_hit_rate.labels(name).set(stats.get("prefix_hit_rate", 0.0))

    def _ask(self, name: str, runner: RunnerClient) -> None:
        """Ask a runner for its stats unless a question to it is still open: one at a time per
        model, so scrapes of a stuck runner do not pile up calls."""
        if name in self._asking:
            return
        task = asyncio.create_task(self._stats_of(name, runner))
        self._asking[name] = task
        task.add_done_callback(lambda _: self._asking.pop(name, None))

    async def _stats_of(self, name: str, runner: RunnerClient) -> None:
        try:
            stats = await asyncio.wait_for(runner.call("stats"), self.stats_timeout)
        except (OllaError, asyncio.TimeoutError) as exc:
            log.debug("no stats from %s: %r", name, exc, extra={"model": name})
            return  # asked again at the next scrape
        self._last[name] = RunnerStats(runner, stats, self.clock())

    async def close(self) -> None:
        """Cancel the questions still open (the app is stopping)."""
        tasks = list(self._asking.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def observe_stream(
        self, events: AsyncGenerator[Event, None], model: str, info: dict[str, Any]
    ) -> AsyncGenerator[Event, None]:
        """Pass a runner's events through, timing the first chunk and the gaps after it;
        `info` gets the request's token counts and TTFT for its log line."""
        started = last = time.perf_counter()
        first = True
        itl = self.itl.labels(model)  # once: a label lookup per token showed in profiles
        try:
            async for event in events:
                if isinstance(event, Chunk):
                    now = time.perf_counter()
                    if first:
                        self.ttft.labels(model).observe(now - started)
                        info["ttft_ms"] = round((now - started) * 1e3, 1)
                        first = False
                    else:
                        itl.observe(now - last)
                    last = now
                elif isinstance(event, Done):
                    # a direct stream's chunk times come with its end
                    self._observe_chunks(event.chunks_ns, started, model, info)
                    prompt, out = event.prompt_eval_count, event.eval_count
                    self.tokens.labels(model, "prompt").inc(prompt)
                    self.tokens.labels(model, "completion").inc(out)
                    info.update(tokens_in=prompt, tokens_out=out)
                yield event
        finally:
            await events.aclose()

    def _observe_chunks(
        self, marks: tuple[int, ...], started: float, model: str, info: dict[str, Any]
    ) -> None:
        """TTFT and ITL of a stream the runner wrote itself, from its chunks' times (the
        same monotonic clock in both processes)."""
        if not marks:
            return
        ttft = marks[0] / 1e9 - started
        self.ttft.labels(model).observe(ttft)
        info["ttft_ms"] = round(ttft * 1e3, 1)
        itl = self.itl.labels(model)
        for before, after in zip(marks, marks[1:], strict=False):
            itl.observe((after - before) / 1e9)


METRICS = web.AppKey("metrics", Metrics)
REQUEST_INFO = "olla.request"  # request[...] dict: model, tokens, TTFT, for the log line


async def metrics_route(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    metrics.refresh(request.app[MANAGER])
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request, and log one line for it: user, route, model, tokens, TTFT, time."""
    started = time.perf_counter()
    info: dict[str, Any] = {}
    request[REQUEST_INFO] = info
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        status = CLIENT_CLOSED  # the client left mid-answer: not a fault of the daemon's
        raise
    finally:
        seconds = time.perf_counter() - started
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "other"
        metrics = request.app[METRICS]
        metrics.requests.labels(route, str(status)).inc()
        metrics.request_seconds.labels(route).observe(seconds)
        user = request.get("user") or request.remote or "local"
        metrics.user_requests.labels(user).inc()
        for kind in ("in", "out"):
            if f"tokens_{kind}" in info:
                which = "prompt" if kind == "in" else "completion"
                metrics.user_tokens.labels(user, which).inc(info[f"tokens_{kind}"])
        if route != "/metrics":
            extra = {"user": user, "status": status, "duration_ms": round(seconds * 1e3, 1)}
            log.info(
                "%s %s %s -> %d in %.0f ms",
                user,
                request.method,
                request.path,
                status,
                seconds * 1e3,
                extra={**extra, **info},
            )
