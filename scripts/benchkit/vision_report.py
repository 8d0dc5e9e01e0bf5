"""The vision bench's report: each server's medians, olla's ratios to llama-server, and what
was run where."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from benchkit.load import median_of
from benchkit.options import BASELINE
from benchkit.report import fmt, machine_info, ratio, render
from benchkit.vision_scenario import VisionRun


@dataclass
class VisionReport:
    """Every round measured on one server, or why it could not be."""

    name: str
    command: str = ""
    version: str = ""
    runs: list[VisionRun] = field(default_factory=list)
    failure: str | None = None

    @property
    def median(self) -> VisionRun | None:
        """Field-wise medians of the rounds; errors and early ends are totals."""
        if not self.runs:
            return None
        m: VisionRun = median_of(self.runs)
        m.errors = sum(r.errors for r in self.runs)
        m.streams_ended_early = sum(r.streams_ended_early for r in self.runs)
        return m


@dataclass(frozen=True)
class Setup:
    """What the header says about the run."""

    argv: list[str]
    model: Path
    projector: Path
    projector_note: str
    threads: int
    streams: int
    ctx_per_seq: int
    repeat_penalty: float
    rounds: int


TTFT_COLUMNS = (
    ("beside streams: new image", "ttft_cold"),
    ("same image again", "ttft_repeat"),
    ("alone: new image", "ttft_alone"),
    ("same image again", "ttft_alone_repeat"),
)
ITL_COLUMNS = (
    ("before p50", "itl_p50_before"),
    ("before p99", "itl_p99_before"),
    ("new image p50", "itl_p50_cold"),
    ("p99", "itl_p99_cold"),
    ("max", "itl_max_cold"),
    ("same again p50", "itl_p50_repeat"),
    ("p99", "itl_p99_repeat"),
    ("max", "itl_max_repeat"),
)


def table(reports: list[VisionReport], columns: tuple[tuple[str, str], ...], markdown: bool) -> str:
    """One row per server (medians, ms), then olla ÷ llama-server where both ran."""
    rows = []
    medians = {r.name: m for r in reports if (m := r.median) is not None}
    for name, m in medians.items():
        rows.append([name, *(fmt(getattr(m, attr)) for _, attr in columns)])
    olla, base = medians.get("olla"), medians.get(BASELINE)
    if olla and base:
        label = f"olla ÷ {BASELINE}"
        rows.append([label, *(ratio(getattr(olla, a), getattr(base, a)) for _, a in columns)])
    return render(["server", *(title for title, _ in columns)], rows, markdown)


def round_line(r: VisionReport) -> str:
    """One server's rounds: the new image's TTFT and the longest stream gap, so the spread shows."""
    error = next((x.first_error for x in r.runs if x.first_error), None)
    return (
        f"{r.name}, each round: TTFT beside streams "
        + ", ".join(fmt(x.ttft_cold) for x in r.runs)
        + " ms; longest stream gap "
        + ", ".join(fmt(x.itl_max_cold) for x in r.runs)
        + " ms; other load "
        + ", ".join(fmt(x.other_load, 2) for x in r.runs)
        + f" cores; {sum(x.errors for x in r.runs)} errors, "
        f"{sum(x.streams_ended_early for x in r.runs)} streams ended early"
        + (f"; first error: {error}" if error else "")
    )


def header_lines(
    setup: Setup, reports: list[VisionReport], machine: dict[str, str], started: datetime
) -> list[str]:
    """What was run, where and how."""
    lines = [
        f"date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {machine['cpu']}, {machine['cores']} cores; load average at start "
        f"{machine['load']}, at end {machine_info()['load']}",
        f"command: {shlex.join(['scripts/bench_vision', *setup.argv])}",
        f"model: {setup.model.name} ({setup.model.stat().st_size / 2**20:.0f} MiB); projector: "
        f"{setup.projector.name} ({setup.projector.stat().st_size / 2**20:.0f} MiB, "
        f"{setup.projector_note}); threads {setup.threads}; {setup.streams} text streams + 1 "
        f"image request, {setup.streams + 1} sequences of {setup.ctx_per_seq} tokens; greedy, "
        f"repeat penalty {setup.repeat_penalty}; medians of {setup.rounds} rounds",
        f"versions: Python {sys.version.split()[0]}; "
        + "; ".join(r.version for r in reports if r.version),
    ]
    lines += [f"{r.name}: {r.command}" for r in reports]
    lines += [round_line(r) for r in reports if r.runs]
    lines += [f"{r.name} FAILED: {r.failure}" for r in reports if r.failure]
    return lines


def format_report(
    setup: Setup,
    reports: list[VisionReport],
    machine: dict[str, str],
    started: datetime,
    markdown: bool,
) -> str:
    """Header lines, then the TTFT table and the streams' ITL table."""
    head = header_lines(setup, reports, machine, started)
    parts = ["\n".join(f"- {x}" if markdown else x for x in head)]
    for title, columns in (
        ("Time to first token of the image request (ms, medians)", TTFT_COLUMNS),
        ("The text streams' inter-token latency (ms, medians)", ITL_COLUMNS),
    ):
        body = table(reports, columns, markdown)
        parts.append((f"**{title}**\n\n" if markdown else f"{title}:\n") + body)
    return "\n\n".join(parts) + "\n"
