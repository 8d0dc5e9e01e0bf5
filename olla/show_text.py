"""What the CLI prints: `/api/show` as Ollama's CLI lays it out, and tables of rows."""

from __future__ import annotations

from typing import Any

import click


def _section(title: str, rows: list[tuple[str, str]]) -> list[str]:
    if not rows:
        return []
    width = max(len(key) for key, _ in rows) + 4
    return (
        [f"  {title}"] + [f"    {key.ljust(width)}{value}".rstrip() for key, value in rows] + [""]
    )


def _text_section(title: str, text: str, max_lines: int) -> list[str]:
    lines = [line for line in text.strip().splitlines()]
    if not lines:
        return []
    shown = lines[:max_lines] + (["..."] if len(lines) > max_lines else [])
    return [f"  {title}"] + [f"    {line}".rstrip() for line in shown] + [""]


def render_show(info: dict[str, Any], verbose: bool = False) -> str:
    """Model, capabilities, parameters, system and license sections."""
    details, model_info = info.get("details", {}), info.get("model_info", {})
    arch = model_info.get("general.architecture", details.get("family", ""))
    model_rows = [
        ("architecture", arch),
        ("parameters", details.get("parameter_size", "")),
        ("context length", str(model_info.get(f"{arch}.context_length", ""))),
        ("embedding length", str(model_info.get(f"{arch}.embedding_length", ""))),
        ("quantization", details.get("quantization_level", "")),
    ]
    lines = [""] + _section("Model", [(k, v) for k, v in model_rows if v])
    lines += _section("Capabilities", [(c, "") for c in info.get("capabilities", [])])
    params = [line.split(None, 1) for line in info.get("parameters", "").splitlines() if line]
    lines += _section("Parameters", [(p[0], p[1] if len(p) > 1 else "") for p in params])
    lines += _text_section("System", info.get("system", ""), 2 if not verbose else 1000)
    lines += _text_section("License", info.get("license", ""), 2 if not verbose else 1000)
    if verbose:
        lines += _section("Metadata", [(k, str(v)) for k, v in sorted(model_info.items())])
    return "\n".join(lines)


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows as columns, the first row the header, as Ollama's CLI lays out its lists."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("    ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
