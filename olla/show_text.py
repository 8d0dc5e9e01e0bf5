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


def _projector_rows(projector: dict[str, Any]) -> list[tuple[str, str]]:
    """Ollama's Projector section: architecture, parameters, the encoder's embedding length and
    the projection's dimensions (under `{arch}.vision.*`, else `{arch}.audio.*`)."""
    arch = projector.get("general.architecture", "")
    rows = [("architecture", arch)] if isinstance(arch, str) and arch else []
    count = projector.get("general.parameter_count")
    if isinstance(count, int):
        rows.append(("parameters", human_number(count)))
    for label, suffix in (
        ("embedding length", "embedding_length"),
        ("dimensions", "projection_dim"),
    ):
        values = [projector.get(f"{arch}.{kind}.{suffix}") for kind in ("vision", "audio")]
        found = [v for v in values if isinstance(v, int | float)]
        if found:
            value = found[0]
            rows.append((label, str(int(value)) if value == int(value) else str(value)))
    return rows


def human_number(count: int) -> str:
    """Ollama's `format.HumanNumber`: 1.2B, 93.47M, 12M, 5K, 999."""
    for scale, suffix, decimals in ((10**9, "B", 1), (10**6, "M", 2), (10**3, "K", 0)):
        if count >= scale:
            number = count / scale
            places = 0 if number == int(number) or suffix == "K" else decimals
            return f"{number:.{places}f}{suffix}"
    return str(count)


def render_show(info: dict[str, Any], verbose: bool = False) -> str:
    """Model, capabilities, projector, parameters, system and license sections."""
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
    lines += _section("Projector", _projector_rows(info.get("projector_info") or {}))
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
