"""The vision bench's run: each server started, warmed up, measured once and stopped, in rounds
whose order alternates (as scripts/bench's, for the same reason: this machine drifts)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import aiohttp

from benchkit.load import CpuSample, RequestResult, post_stream, stream_request
from benchkit.options import Options
from benchkit.report import fmt
from benchkit.rounds import progress
from benchkit.servers import ServerProcess
from benchkit.vision_images import image_message, make_png
from benchkit.vision_report import VisionReport
from benchkit.vision_scenario import IMAGE_MAX_TOKENS, VisionRun, run_vision
from benchkit.vision_servers import VisionFlavor
from olla.errors import OllaError

# the warm-up image's seed, far from the measured ones (2 per round from 0)
WARM_SEED = 1_000_000


async def warm_up(
    session: aiohttp.ClientSession, server: ServerProcess, flavor: VisionFlavor, rep: int
) -> None:
    """A text request (olla loads the model on first use), then an image of its own.

    Neither is measured: the first image also pays one-time costs (the encoder's buffers, the
    runner's projector) that a serving daemon pays once.
    """
    text = await stream_request(session, server, "Say hello.", 8)
    body = flavor.chat([image_message(make_png(WARM_SEED + rep))], IMAGE_MAX_TOKENS)
    image = await post_stream(RequestResult(), session, server, body, IMAGE_MAX_TOKENS)
    for what, r in (("text", text), ("image", image)):
        if r.error or not r.chunk_times:
            raise RuntimeError(f"warm-up {what} request failed: {r.error or 'no text'}")


def run_line(name: str, rep: int, r: VisionRun) -> str:
    """One round's figures, for the progress lines."""
    return (
        f"{name} round {rep + 1}: image TTFT {fmt(r.ttft_cold)} ms beside streams "
        f"(again {fmt(r.ttft_repeat)}), alone {fmt(r.ttft_alone)} (again "
        f"{fmt(r.ttft_alone_repeat)}); streams' ITL p50 before {fmt(r.itl_p50_before, 1)}, "
        f"in the window p50/p99/max {fmt(r.itl_p50_cold, 1)}/{fmt(r.itl_p99_cold, 1)}/"
        f"{fmt(r.itl_max_cold)} ms; other load {fmt(r.other_load, 2)} cores; "
        f"{r.errors} errors {r.first_error or ''}"
    )


async def bench_server(
    flavor: VisionFlavor,
    opts: Options,
    prompts: list[str],
    report: VisionReport,
    rep: int,
    logs: Path | None = None,
) -> None:
    """Start one server, measure round `rep` of it into `report`, stop it; its log into `logs`.

    A failure is recorded in the report, never raised.
    """
    with tempfile.TemporaryDirectory(prefix=f"bench-vision-{flavor.name}-") as tmp:
        server = ServerProcess(flavor, opts, Path(tmp))
        report.command = shlex.join(server.argv)
        try:
            report.version = flavor.version(opts)
            progress(f"starting {flavor.name} on port {server.port}: {report.command}")
            server.start()
            # a fresh connection per request, as scripts/bench (keep-alive timeouts)
            connector = aiohttp.TCPConnector(limit=0, force_close=True)
            async with aiohttp.ClientSession(connector=connector, read_bufsize=2**22) as session:
                await server.wait_ready()
                flavor.setup(opts, server.port, Path(tmp))
                await warm_up(session, server, flavor, rep)
                before = CpuSample.take(server.pgid)
                run = await run_vision(session, server, flavor.chat, prompts, rep)
                run.other_load = CpuSample.take(server.pgid).other_load_since(before)
            report.runs.append(run)
            progress(run_line(flavor.name, rep, run))
        except (RuntimeError, OSError, subprocess.SubprocessError, OllaError) as exc:
            report.failure = f"{exc}"
            progress(
                f"{flavor.name} FAILED: {exc}\n--- last lines of its log ---\n"
                f"{server.log_tail()}\n---"
            )
        finally:
            server.stop()
            if logs is not None and server.daemon.log_path.exists():
                shutil.copy(server.daemon.log_path, logs / f"{flavor.name}-{rep + 1}.log")


async def bench_vision(
    opts: Options,
    ready: list[tuple[VisionFlavor, VisionReport]],
    prompts: list[str],
    logs: Path | None = None,
) -> None:
    """`opts.repeat` rounds, each server once per round, the order reversed every other round."""
    for rep in range(opts.repeat):
        for flavor, report in ready if rep % 2 == 0 else reversed(ready):
            if report.failure is None:
                await bench_server(flavor, opts, prompts, report, rep, logs)
