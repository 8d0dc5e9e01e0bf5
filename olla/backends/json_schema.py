"""JSON schema → GBNF, so that every answer validates: what the converter cannot enforce is a 400.

llama-cpp-python's converter (a port of llama.cpp's `json_schema_to_grammar.py`) ignores some
keywords, among them integer bounds, which would let an answer break its schema. olla adds the
bounds of integers (as digit-by-digit ranges, as llama.cpp's C++ converter does) and refuses the
keywords nobody enforces, naming where they are, rather than promise what it cannot keep.
"""

from __future__ import annotations

import math
from typing import Any

from olla.errors import InvalidRequest

# A JSON string character: the port's own rule lets control characters (a raw newline) through,
# which no JSON parser accepts; this is llama.cpp's.
_CHAR = r'[^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
_MAX_DIGITS = 18  # an unbounded integer: at most this many digits (within int64)
# Keywords no grammar here enforces; a schema using them gets a 400 that names them.
_UNENFORCED = (
    "multipleOf",
    "minProperties",
    "maxProperties",
    "uniqueItems",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "patternProperties",
    "dependentRequired",
    "dependentSchemas",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
)
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """The GBNF grammar whose every sentence validates against `schema`; InvalidRequest if olla
    cannot make one."""
    from llama_cpp.llama_grammar import SchemaConverter

    _check(schema, "format")

    class Converter(SchemaConverter):
        def visit(self, node: dict[str, Any], name: str) -> str:
            if node.get("type") == "integer" and any(k in node for k in _BOUNDS):
                lo, hi = _integer_bounds(node)
                rule = integer_range_rule(lo, hi)
                return str(self._add_rule(name or "root", f"({rule}) space"))
            return str(super().visit(node, name))

    converter = Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    resolved = converter.resolve_refs(schema, "input")
    converter.visit(resolved, "")
    if "char" in converter._rules:
        converter._rules["char"] = _CHAR
    return str(converter.format_grammar())


def _check(node: Any, where: str) -> None:
    """Refuse keywords no grammar enforces, and bounds on anything but integers."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check(item, f"{where}[{i}]")
        return
    if not isinstance(node, dict):
        return
    for keyword in _UNENFORCED:
        if keyword in node:
            raise InvalidRequest(
                f'field "{where}": olla cannot enforce "{keyword}" in a JSON schema; '
                "remove it (and check that part of the answer yourself)"
            )
    if any(k in node for k in _BOUNDS) and node.get("type") != "integer":
        raise InvalidRequest(
            f'field "{where}": olla enforces minimum and maximum on integers only, not on '
            f"{node.get('type') or 'untyped'} values"
        )
    for key in _SUBSCHEMA_LISTS:
        if key in node:
            _check(node[key], f"{where}.{key}")
    for key in _SUBSCHEMA_MAPS:
        for name, sub in (node.get(key) or {}).items():
            _check(sub, f"{where}.{key}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            _check(node[key], f"{where}.{key}")


def _integer_bounds(node: dict[str, Any]) -> tuple[int | None, int | None]:
    lo, hi = node.get("minimum"), node.get("maximum")
    lo = None if lo is None else math.ceil(lo)
    hi = None if hi is None else math.floor(hi)
    if (x := node.get("exclusiveMinimum")) is not None and not isinstance(x, bool):
        lo = max(lo, math.floor(x) + 1) if lo is not None else math.floor(x) + 1
    if (x := node.get("exclusiveMaximum")) is not None and not isinstance(x, bool):
        hi = min(hi, math.ceil(x) - 1) if hi is not None else math.ceil(x) - 1
    if lo is not None and hi is not None and lo > hi:
        raise InvalidRequest(f'field "format": no integer lies between {lo} and {hi}')
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
    """Naturals in [lo, hi] written without leading zeros (hi None: up to _MAX_DIGITS digits)."""
    alternatives = []
    if lo == 0:
        alternatives.append('"0"')
        lo = 1
    if hi is None:
        digits = len(str(lo))
        if digits < _MAX_DIGITS:
            alternatives.append(f"[1-9] [0-9]{{{digits},{_MAX_DIGITS - 1}}}")
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
