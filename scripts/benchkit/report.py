"""The report: what was measured on each server, as plain or Markdown tables, and the file that
--out writes it into."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from benchkit.load import median_of
from benchkit.options import BASELINE, RESULTS_BEGIN, RESULTS_END, Options
from benchkit.scenarios import InterferenceStats, LevelStats, PrefixStats


@dataclass
class ServerReport:
    """Everything measured on one server, or why it could not be."""

    name: str
    command: str
    version: str = ""
    levels: dict[int, LevelStats] = field(default_factory=dict)
    prefix: PrefixStats | None = None
    interference: InterferenceStats | None = None
    failure: str | None = None
    # every run so far, by round; the fields above are their medians
    level_runs: dict[int, list[LevelStats]] = field(default_factory=dict)
    prefix_runs: list[PrefixStats] = field(default_factory=list)
    interference_runs: list[InterferenceStats] = field(default_factory=list)

    def summarize(self) -> None:
        """Medians of the runs so far; the counts of requests and errors are totals."""
        for c, runs in self.level_runs.items():
            self.levels[c] = replace(
                median_of(runs),
                requests=sum(r.requests for r in runs),
                errors=sum(r.errors for r in runs),
            )
        if self.prefix_runs:
            self.prefix = median_of(self.prefix_runs)
        if self.interference_runs:
            self.interference = median_of(self.interference_runs)


def machine_info() -> dict[str, str]:
    """The CPU's name, the cores this process may use, and the load average now."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": f"{usable} usable of {os.cpu_count()}",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def fmt(value: float, digits: int = 0) -> str:
    """`value` with `digits` decimals; "-" for NaN (nothing measured)."""
    return "-" if value != value else f"{value:.{digits}f}"


def fmt_level(s: LevelStats) -> str:
    """One run of one level, for the progress lines."""
    return (
        f"{fmt(s.tok_s, 1)} tok/s, TTFT {fmt(s.ttft_p50)}/{fmt(s.ttft_p99)} ms, "
        f"ITL {fmt(s.itl_p50, 1)}/{fmt(s.itl_p99, 1)} ms, "
        f"{fmt(s.tokens_per_request, 1)} tok/req, {s.errors} errors, "
        f"other load {fmt(s.other_load, 2)} cores"
    )


def render(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    """A table in Markdown, or as right-aligned plain columns."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(x) for x in col) for col in zip(headers, *rows, strict=False)]
    return "\n".join(
        "  ".join(x.rjust(w) for x, w in zip(r, widths, strict=False)) for r in [headers, *rows]
    )


def ratio(a: float, b: float) -> str:
    """a / b with two decimals; "-" where either is missing or b is 0."""
    return "-" if a != a or b != b or b == 0 else f"{a / b:.2f}"


MAIN_HEADERS = [
    "C",
    "server",
    "tok/s",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "ITL p50 ms",
    "ITL p99 ms",
    f"tok/s ÷ {BASELINE}",
    f"TTFT p50 ÷ {BASELINE}",
    "tokens/request",
    "errors",
    "other load (cores)",
]


def main_row(c: int, name: str, s: LevelStats, base: LevelStats | None) -> list[str]:
    """One row of the main table: server `name` at C = `c`, ratios to `base`."""
    return [
        str(c),
        name,
        fmt(s.tok_s, 1),
        fmt(s.ttft_p50),
        fmt(s.ttft_p99),
        fmt(s.itl_p50, 1),
        fmt(s.itl_p99, 1),
        ratio(s.tok_s, base.tok_s) if base else "-",
        ratio(s.ttft_p50, base.ttft_p50) if base else "-",
        fmt(s.tokens_per_request, 1),
        f"{s.errors}/{s.requests}",
        fmt(s.other_load, 2),
    ]


def main_table(opts: Options, reports: list[ServerReport]) -> tuple[list[str], list[list[str]]]:
    """One row per (C, server); ratios are to llama-server at the same C."""
    base = next((r for r in reports if r.name == BASELINE), None)
    rows = [
        main_row(c, r.name, r.levels[c], base.levels.get(c) if base else None)
        for c in opts.clients
        for r in reports
        if c in r.levels
    ]
    return MAIN_HEADERS, rows


def error_lines(reports: list[ServerReport]) -> list[str]:
    """One line per level that had failed requests, with the first error."""
    return [
        f"{r.name} C={c}: {s.errors} failed requests, first: {s.first_error}"
        for r in reports
        for c, s in r.levels.items()
        if s.errors
    ]


Table = tuple[str, list[str], list[list[str]]]  # title, headers, rows


def prefix_table(reports: list[ServerReport]) -> Table:
    """The shared-prefix scenario, one row per server that ran it."""
    headers = [
        "server",
        "prefix tokens",
        "TTFT 1st ms",
        "TTFT 2nd ms",
        "2nd / 1st",
        "target ≤ 0.20",
        "errors",
    ]
    rows = [
        [
            r.name,
            str(p.prefix_tokens),
            fmt(p.ttft_first),
            fmt(p.ttft_second),
            fmt(p.ratio, 2),
            "yes" if p.ratio <= 0.2 else "no",
            str(p.errors),
        ]
        for r in reports
        if (p := r.prefix)
    ]
    return "Shared prefix (medians)", headers, rows


def interference_table(reports: list[ServerReport]) -> Table:
    """The long-prompt interference scenario, one row per server that ran it."""
    headers = [
        "server",
        "streams",
        "long prompt tokens",
        "ITL p50 before ms",
        "ITL p50 window ms",
        "ITL p99 window ms",
        "p99 window / p50 before",
        "target ≤ 3",
        "long prompt TTFT ms",
        "streams ended early",
        "errors",
    ]
    rows = [
        [
            r.name,
            str(i.streams),
            str(i.long_prompt_tokens),
            fmt(i.itl_p50_before, 1),
            fmt(i.itl_p50_window, 1),
            fmt(i.itl_p99_window, 1),
            fmt(i.ratio, 2),
            interference_verdict(i),
            fmt(i.window_ms),
            str(i.streams_ended_early),
            str(i.errors),
        ]
        for r in reports
        if (i := r.interference)
    ]
    return "Long-prompt interference (medians)", headers, rows


def scenario_tables(reports: list[ServerReport]) -> list[Table]:
    """The scenario tables that have rows."""
    tables = [prefix_table(reports), interference_table(reports)]
    return [t for t in tables if t[2]]


def interference_verdict(i: InterferenceStats) -> str:
    """Whether the target was met, or why it could not be judged."""
    if i.streams_ended_early:
        return "n/a: streams ended before the long prompt's first token"
    return "yes" if i.ratio <= 3 else "no"


def header_lines(
    opts: Options, reports: list[ServerReport], machine: dict[str, str], started: datetime
) -> list[str]:
    """What was run, where and how: the lines above the tables."""
    lines = [
        f"date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {machine['cpu']}, {machine['cores']} cores; load average at start "
        f"{machine['load']}, at end {machine_info()['load']}",
        f"command: {shlex.join(['scripts/bench', *opts.argv])}",
        f"model: {opts.model.name} ({opts.model.stat().st_size / 2**20:.0f} MiB); "
        f"threads {opts.threads}; context {opts.ctx_per_seq} per sequence, {opts.parallel} "
        f"sequences; max tokens {opts.max_tokens}; {opts.requests_per_client} requests per "
        f"client; medians of {opts.repeat} runs; greedy, repeat penalty "
        f"{opts.repeat_penalty if opts.repeat_penalty is not None else 'as each server defaults'}"
        f"; flash attention {opts.flash_attention or 'as each server defaults'}",
        f"versions: Python {sys.version.split()[0]}; "
        + "; ".join(r.version for r in reports if r.version),
    ]
    lines += [f"{r.name}: {r.command}" for r in reports]
    lines += [f"{r.name} FAILED: {r.failure}" for r in reports if r.failure]
    return lines


def format_report(
    opts: Options, reports: list[ServerReport], machine: dict[str, str], started: datetime
) -> str:
    """The whole report: header lines, the main table, errors, the scenario tables."""
    md = opts.markdown
    head = header_lines(opts, reports, machine, started)
    parts = ["\n".join(f"- {x}" if md else x for x in head)]
    headers, rows = main_table(opts, reports)
    parts.append(render(headers, rows, md) if rows else "(no server produced results)")
    errors = error_lines(reports)
    if errors:
        parts.append("\n".join(f"- {x}" if md else x for x in errors))
    for title, headers, rows in scenario_tables(reports):
        parts.append((f"**{title}**\n\n" if md else f"{title}:\n") + render(headers, rows, md))
    return "\n\n".join(parts) + "\n"


def write_out(path: Path, report: str) -> None:
    """Put the report between the markers of an existing file, or write a new file."""
    block = f"{RESULTS_BEGIN}\n{report}{RESULTS_END}"
    if path.exists():
        text = path.read_text()
        if RESULTS_BEGIN not in text or RESULTS_END not in text:
            raise SystemExit(f"{path} has no {RESULTS_BEGIN} ... {RESULTS_END}; not overwriting")
        before, rest = text.split(RESULTS_BEGIN, 1)
        after = rest.split(RESULTS_END, 1)[1]
        path.write_text(before + block + after)
    else:
        path.write_text(block + "\n")
