"""`olla run --verbose`: the timing summary after an answer, and an embedding's vector, as
`ollama run` prints them.

The summary is Ollama's (`api.Metrics.Summary`): a line for each figure the answer's last
stream line carries, durations in Go's `time.Duration` notation ("1.234567s", "12.5ms"),
rates with two decimals. An embedding model's vector is one line of JSON as Go's encoder
writes a `[]float32`: no spaces, each number the shortest that reads back as the same float32.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

_UNITS = ((1_000, "ns"), (1_000_000, "µs"), (1_000_000_000, "ms"))


def go_duration(ns: int) -> str:
    """A duration in nanoseconds as Go's `time.Duration.String` writes it."""
    if ns < 0:
        return "-" + go_duration(-ns)
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:  # one unit below a second, with its fraction
        for limit, unit in _UNITS:
            if ns < limit:
                return _fraction(ns, limit // 1_000) + unit
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _fraction(rest, 1_000_000_000) + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def _fraction(value: int, unit: int) -> str:
    """`value / unit` with as many decimals as it needs (none when whole)."""
    whole, part = divmod(value, unit)
    if not part:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{part:0{digits}d}".rstrip("0")


def summary(stats: Mapping[str, Any]) -> str:
    """Ollama's timing summary of an answer from its last line (`total_duration` and the rest,
    in nanoseconds); a figure that is absent or zero is left out, as Ollama leaves it."""
    lines: list[str] = []

    def add(label: str, text: str) -> None:
        lines.append(f"{label + ':':<22}{text}")

    total, load = int(stats.get("total_duration") or 0), int(stats.get("load_duration") or 0)
    if total > 0:
        add("total duration", go_duration(total))
    if load > 0:
        add("load duration", go_duration(load))
    for prefix, count_key, duration_key in (
        ("prompt eval", "prompt_eval_count", "prompt_eval_duration"),
        ("eval", "eval_count", "eval_duration"),
    ):
        count, duration = int(stats.get(count_key) or 0), int(stats.get(duration_key) or 0)
        if count > 0:
            add(f"{prefix} count", f"{count} token(s)")
        if duration > 0:
            add(f"{prefix} duration", go_duration(duration))
            add(f"{prefix} rate", f"{count / (duration / 1e9):.2f} tokens/s")
    return "".join(line + "\n" for line in lines)


def go_float32(value: float) -> str:
    """A number as Go's JSON encoder writes a float32: the shortest decimal that reads back as
    the same float32, in plain notation, or exponent notation below 1e-6 and from 1e21."""
    single = _float32(value)
    if single == 0:
        return "-0" if str(single).startswith("-") else "0"
    for precision in range(9):  # 9 significant digits always suffice for a float32
        text = f"{single:.{precision}e}"
        if _float32(float(text)) == single:
            break
    if 1e-6 <= abs(single) < 1e21:
        return format(Decimal(text), "f")
    mantissa, exponent = text.split("e")
    # Go writes at least two exponent digits, then its JSON encoder drops the 0 of "e-07"
    return f"{mantissa}e{exponent[0]}{int(exponent[1:]):02d}".replace("e-0", "e-")


def _float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def vector_line(vector: Sequence[float]) -> str:
    """An embedding as `ollama run` prints it: `[0.1,-0.2,...]`."""
    return "[" + ",".join(go_float32(v) for v in vector) + "]"
