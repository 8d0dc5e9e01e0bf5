"""Load and its timing: one streamed request timed on the client side, and the CPU that other
processes took meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from benchkit.servers import ServerProcess


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far: by the whole machine, and by the bench and the server under test.

    The difference between two samples tells how busy other processes kept the CPUs during a
    run, so that figures taken on a shared machine can be judged.
    """

    wall: float
    machine: float
    ours: float

    @classmethod
    def take(cls, pgid: int | None) -> CpuSample:
        """The counters now; `pgid` is the server's process group (its runners included)."""
        hz = os.sysconf("SC_CLK_TCK")
        with contextlib.suppress(OSError):
            # cpu  user nice system idle iowait irq softirq steal ...: busy = all but idle, iowait
            ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
            machine = (sum(ticks[:8]) - ticks[3] - ticks[4]) / hz
            own = os.times()
            return cls(time.monotonic(), machine, own.user + own.system + group_cpu(pgid) / hz)
        return cls(time.monotonic(), float("nan"), float("nan"))

    def other_load_since(self, before: CpuSample) -> float:
        """Average cores used by other processes (and stolen by the hypervisor) in between."""
        wall = self.wall - before.wall
        other = (self.machine - before.machine) - (self.ours - before.ours)
        return max(0.0, other / wall) if wall > 0 else float("nan")


def group_cpu(pgid: int | None) -> int:
    """CPU ticks (user + system) of the live processes of a process group."""
    total = 0
    if pgid is None:
        return total
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            rest = text[text.rindex(")") + 2 :].split()  # the name, in (), may hold spaces
            if int(rest[2]) == pgid:
                total += int(rest[11]) + int(rest[12])
    return total


@dataclass
class RequestResult:
    """One streamed request, timed on the client side (time.perf_counter seconds)."""

    sent: float = 0.0
    chunk_times: list[float] = field(default_factory=list)  # arrivals of non-empty text chunks
    server_tokens: int | None = None
    finished: float | None = None
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] - self.sent if self.chunk_times else None

    @property
    def itls(self) -> list[float]:
        return [b - a for a, b in zip(self.chunk_times, self.chunk_times[1:], strict=False)]

    @property
    def num_tokens(self) -> int:
        return self.server_tokens if self.server_tokens is not None else len(self.chunk_times)


async def stream_into(
    result: RequestResult,
    session: aiohttp.ClientSession,
    server: ServerProcess,
    prompt: str,
    max_tokens: int,
) -> RequestResult:
    """Send one streaming request and record each chunk's arrival into `result` as it comes."""
    body = server.flavor.payload(prompt, max_tokens)
    return await post_stream(result, session, server, body, max_tokens)


async def post_stream(
    result: RequestResult,
    session: aiohttp.ClientSession,
    server: ServerProcess,
    body: dict[str, Any],
    max_tokens: int,
) -> RequestResult:
    """POST `body` to the server's endpoint; record each text chunk's arrival into `result`."""
    flavor = server.flavor
    timeout = aiohttp.ClientTimeout(total=server.opts.request_timeout)
    result.sent = time.perf_counter()
    try:
        async with session.post(
            server.base_url + flavor.endpoint, timeout=timeout, json=body
        ) as resp:
            if resp.status != 200:
                result.error = f"HTTP {resp.status}: {(await resp.text())[:300]}"
                return result
            async for raw in resp.content:
                now = time.perf_counter()
                chunk = flavor.parse(raw.decode("utf-8", "replace"), max_tokens)
                if chunk is None:
                    continue
                if chunk.text:
                    result.chunk_times.append(now)
                if chunk.num_tokens is not None:
                    result.server_tokens = chunk.num_tokens
                if chunk.error or chunk.done:
                    result.error = chunk.error
                    break
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.finished = time.perf_counter()
    return result


async def stream_request(
    session: aiohttp.ClientSession, server: ServerProcess, prompt: str, max_tokens: int
) -> RequestResult:
    """Send one streaming request and time it (`stream_into` a fresh result)."""
    return await stream_into(RequestResult(), session, server, prompt, max_tokens)


def safe_div(a: float, b: float) -> float:
    """a / b, NaN where b is 0."""
    return a / b if b else float("nan")


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (linear interpolation) in milliseconds; NaN for no values."""
    return float(np.percentile(values, q)) * 1000.0 if len(values) else float("nan")


def median_of(runs: list[Any]) -> Any:
    """Field-wise median of dataclass instances (numbers); other fields from the first run."""
    values: dict[str, Any] = {}
    for f in fields(runs[0]):
        column = [getattr(r, f.name) for r in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in column):
            finite = [v for v in column if v == v]  # NaN-free
            values[f.name] = statistics.median(finite) if finite else float("nan")
        else:
            values[f.name] = next((v for v in column if v is not None), None)
    return replace(runs[0], **values)
