"""JSON schema → GBNF, so that every answer validates: what olla cannot enforce is a 400.

llama-cpp-python's converter (a port of llama.cpp's `json_schema_to_grammar.py`) ignores some
keywords, among them integer bounds, which would let an answer break its schema. olla adds the
bounds of integers (`olla.backends.integer_ranges`), writes repetitions and enums so that the
grammar stays small (`olla.backends.schema_converter`), and refuses the keywords nobody enforces,
naming where they are, rather than promise what it cannot keep. A schema over
`olla.backends.schema_limits` is refused before any of that runs: no schema may crash a runner
or stall its batch.
"""

from __future__ import annotations

from typing import Any

from olla.backends.integer_ranges import BOUNDS
from olla.backends.schema_limits import SchemaLimits, check_grammar, check_schema
from olla.errors import InvalidRequest

DEFAULT_LIMITS = SchemaLimits()

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
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")


def schema_to_gbnf(schema: dict[str, Any], limits: SchemaLimits = DEFAULT_LIMITS) -> str:
    """The GBNF grammar whose every sentence validates against `schema`; InvalidRequest if olla
    cannot make one, or if the schema or its grammar is over `limits`."""
    check_schema(schema, limits)  # first: it bounds the nesting that the walks below recurse on
    _check(schema, "format")
    from olla.backends.schema_converter import convert  # loads llama.cpp: runners only

    grammar = convert(schema)
    check_grammar(grammar, limits)
    return grammar


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
    if any(k in node for k in BOUNDS) and node.get("type") != "integer":
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
