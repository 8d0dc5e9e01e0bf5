"""The run: servers measured in rounds, each started, measured and stopped in turn."""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

from benchkit.load import stream_request
from benchkit.options import BASELINE, Options
from benchkit.prompts import ScenarioTexts, load_prompts, make_scenario_texts
from benchkit.report import ServerReport, fmt, fmt_level
from benchkit.scenarios import run_interference, run_level, run_shared_prefix
from benchkit.servers import Flavor, ServerProcess, flavors
from olla.errors import OllaError


async def measure(
    session: aiohttp.ClientSession,
    server: ServerProcess,
    prompts: list[str],
    texts: ScenarioTexts | None,
    report: ServerReport,
    rep: int,
) -> None:
    """Round `rep` on a started server: every level once, then the scenarios once."""
    opts = server.opts
    name = server.flavor.name
    warm = await stream_request(session, server, prompts[-1], 8)  # loads the model (olla)
    if warm.error:
        raise RuntimeError(f"warm-up request failed: {warm.error}")
    for c in opts.clients:
        run = await run_level(session, server, prompts, c, rep)
        report.level_runs.setdefault(c, []).append(run)
        progress(f"{name} C={c} run {rep + 1}: {fmt_level(run)}")
    if texts and opts.shared_prefix:
        p = await run_shared_prefix(session, server, texts, rep)
        report.prefix_runs.append(p)
        progress(
            f"{name} shared prefix run {rep + 1}: TTFT {fmt(p.ttft_first)} then "
            f"{fmt(p.ttft_second)} ms, {p.errors} errors {p.first_error or ''}"
        )
    if texts and opts.long_prompt_interference:
        i = await run_interference(session, server, prompts, texts, rep)
        report.interference_runs.append(i)
        progress(
            f"{name} interference run {rep + 1}: ITL p50 before {fmt(i.itl_p50_before, 1)}, "
            f"window p50/p99 {fmt(i.itl_p50_window, 1)}/{fmt(i.itl_p99_window, 1)} ms, "
            f"window {fmt(i.window_ms)} ms, {i.errors} errors {i.first_error or ''}"
        )
    report.summarize()


async def bench_server(
    flavor: Flavor,
    opts: Options,
    prompts: list[str],
    texts: ScenarioTexts | None,
    report: ServerReport,
    rep: int,
) -> None:
    """Start one server, measure round `rep` of it into `report`, stop it.

    A failure is recorded in the report, never raised; an interruption leaves what was measured.
    """
    with tempfile.TemporaryDirectory(prefix=f"bench-{flavor.name}-") as tmp:
        server = ServerProcess(flavor, opts, Path(tmp))
        report.command = shlex.join(server.argv)
        try:
            report.version = flavor.version(opts)
            progress(f"starting {flavor.name} on port {server.port}: {report.command}")
            server.start()
            # A fresh connection per request: a pooled one may have been closed by the server's
            # keep-alive timeout while idle (llama-server's is 5 s), failing the next request.
            connector = aiohttp.TCPConnector(limit=0, force_close=True)
            async with aiohttp.ClientSession(connector=connector, read_bufsize=2**22) as session:
                await server.wait_ready()
                flavor.setup(opts, server.port, Path(tmp))
                await measure(session, server, prompts, texts, report, rep)
        except (RuntimeError, OSError, subprocess.SubprocessError, OllaError) as exc:
            report.failure = f"{exc}"
            progress(
                f"{flavor.name} FAILED: {exc}\n--- last lines of its log ---\n"
                f"{server.log_tail()}\n---"
            )
        finally:
            server.stop()


def progress(message: str) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    print(f"# {message}", file=sys.stderr, flush=True)


async def bench(opts: Options, reports: list[ServerReport]) -> None:
    """Measure the servers in rounds, each server once per round, adding reports as it goes.

    The order alternates (A B C, then C B A, ...): this machine's speed drifts over minutes, and
    measuring one server's runs all before the next's would turn the drift into a ratio.
    """
    prompts = load_prompts()
    texts = None
    if opts.shared_prefix or opts.long_prompt_interference:
        texts = make_scenario_texts(opts)
    ready: list[tuple[Flavor, ServerReport]] = []
    for flavor in flavors(opts):
        if isinstance(flavor, str):
            reports.append(ServerReport(BASELINE, "", failure=flavor))
            continue
        report = ServerReport(flavor.name, "")
        reports.append(report)
        ready.append((flavor, report))
    for rep in range(opts.repeat):
        for flavor, report in ready if rep % 2 == 0 else reversed(ready):
            if report.failure is None:
                await bench_server(flavor, opts, prompts, texts, report, rep)
