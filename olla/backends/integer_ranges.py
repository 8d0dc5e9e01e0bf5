"""JSON integers within bounds as GBNF: digit-by-digit ranges, as llama.cpp's C++ converter does.

llama-cpp-python's converter ignores `minimum`/`maximum` on integers, which would let an answer
break its schema; `olla.backends.json_schema` uses these rules instead.
"""

from __future__ import annotations

import math
from typing import Any

from olla.errors import InvalidRequest

MAX_DIGITS = 18  # an unbounded integer: at most this many digits (within int64)
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def integer_bounds(node: dict[str, Any], where: str) -> tuple[int | None, int | None]:
    """The inclusive integer bounds of an integer schema (None: unbounded on that side)."""
    values = {k: node.get(k) for k in BOUNDS}
    for key, value in values.items():
        if value is None or (isinstance(value, bool) and key.startswith("exclusive")):
            continue  # JSON schema draft 4: `"exclusiveMinimum": true` qualifies "minimum"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidRequest(f'field "{where}": {key} must be a number')
        if not math.isfinite(value):
            raise InvalidRequest(f'field "{where}": {key} must be a finite number')
    lo, hi = values["minimum"], values["maximum"]
    ex_lo, ex_hi = values["exclusiveMinimum"], values["exclusiveMaximum"]
    if lo is not None:
        lo = math.floor(lo) + 1 if ex_lo is True else math.ceil(lo)
    if hi is not None:
        hi = math.ceil(hi) - 1 if ex_hi is True else math.floor(hi)
    if ex_lo is not None and not isinstance(ex_lo, bool):
        lo = max(lo, math.floor(ex_lo) + 1) if lo is not None else math.floor(ex_lo) + 1
    if ex_hi is not None and not isinstance(ex_hi, bool):
        hi = min(hi, math.ceil(ex_hi) - 1) if hi is not None else math.ceil(ex_hi) - 1
    if lo is not None and hi is not None and lo > hi:
        raise InvalidRequest(f'field "{where}": no integer lies between {lo} and {hi}')
    return lo, hi


def integer_range_rule(lo: int | None, hi: int | None) -> str:
    """A GBNF alternation of the JSON integers in [lo, hi] (None: unbounded)."""
    parts = []
    if lo is None or lo < 0:  # negatives: "-" and a magnitude in [max(1, -hi), -lo]
        top = None if lo is None else -lo
        bottom = 1 if hi is None or hi >= 0 else -hi
        parts.append(f'"-" ({_natural_rule(bottom, top)})')
    if hi is None or hi >= 0:
        bottom = 0 if lo is None or lo < 0 else lo
        parts.append(_natural_rule(bottom, hi))
    return " | ".join(parts)


def _natural_rule(lo: int, hi: int | None) -> str:
    """Naturals in [lo, hi] written without leading zeros (hi None: up to MAX_DIGITS digits)."""
    alternatives = []
    if lo == 0:
        alternatives.append('"0"')
        lo = 1
    if hi is None:
        digits = len(str(lo))
        if digits < MAX_DIGITS:
            alternatives.append(f"[1-9] [0-9]{{{digits},{MAX_DIGITS - 1}}}")
        hi = 10**digits - 1
    if lo <= hi:
        alternatives.extend(_digit_ranges(lo, hi))
    return " | ".join(alternatives)


def _digit_ranges(lo: int, hi: int) -> list[str]:
    """[lo, hi] (1 <= lo <= hi) as pieces `prefix [a-b] [0-9]{k}`."""
    pieces = []
    start = lo
    while start <= hi:
        k = 0  # the widest aligned block of 10^k numbers that starts at `start` and fits
        while start % 10 ** (k + 1) == 0 and start + 10 ** (k + 1) - 1 <= hi:
            k += 1
        step, end = 10**k, start + 10**k - 1
        while end + step <= hi and (end + 1) % 10 ** (k + 1) != 0:
            end += step  # more blocks under the same prefix
        text_lo, text_hi = str(start), str(end)
        cut = len(text_lo) - k - 1
        piece = [f'"{text_lo[:cut]}"'] if cut else []
        a, b = text_lo[cut], text_hi[cut]
        piece.append(f'"{a}"' if a == b else f"[{a}-{b}]")
        if k:
            piece.append(f"[0-9]{{{k}}}")
        pieces.append(" ".join(piece))
        start = end + 1
    return pieces
