"""llama-cpp-python's JSON schema converter, with what keeps its grammar small and its work linear.

The port (of llama.cpp's `json_schema_to_grammar.py`) writes `maxItems: n` and `maxLength: n` as
n optional groups nested in one another, which llama.cpp's recursive parser follows one stack
frame per level: past 18,000-19,000 levels it overflows the runner's 8 MiB stack (signal 11), and
past 1,000 it refuses the grammar anyway. Here a repetition is a chain of rules, each naming the
next last in its one group, so nothing nests and a sequence keeps 2 or 3 stacks open. An enum is
a trie (`olla.backends.literal_trie`). Rule names are cut and numbered in constant time: the
port searched `name0`, `name1`, ... for a free one, and took 19 s for 5,000 properties whose
names (in Chinese) all became `-`. Imported only where llama.cpp is loaded (the runner).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from llama_cpp.llama_grammar import (
    INVALID_RULE_CHARS_RE,
    PRIMITIVE_RULES,
    RESERVED_NAMES,
    STRING_FORMAT_RULES,
    SchemaConverter,
)

from olla.backends.integer_ranges import BOUNDS, integer_bounds, integer_range_rule
from olla.backends.literal_trie import gbnf_literal, json_text, trie_rule

# A JSON string character: the port's own rule lets control characters (a raw newline) through,
# which no JSON parser accepts; this is llama.cpp's.
_CHAR = r'[^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
_NAME_CHARS = 48  # a longer rule name is cut and numbered: names grow with the schema's depth
_FIRST = ("$ref", "oneOf", "anyOf", "const")  # the port's visit takes these before the rest


def convert(schema: dict[str, Any]) -> str:
    """The GBNF grammar for `schema`, which `olla.backends.schema_limits` has checked."""
    converter = Converter()
    # resolve_refs rewrites every "$ref" in place: the caller's schema stays as it was
    converter.visit(converter.resolve_refs(copy.deepcopy(schema), "input"), "")
    if "char" in converter._rules:
        converter._rules["char"] = _CHAR
    return str(converter.format_grammar())


class Converter(SchemaConverter):
    """The port, with integer bounds, chained repetitions, enums as tries, and linear naming."""

    def __init__(self) -> None:
        super().__init__(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        self._keys: dict[tuple[str, str], str] = {}
        self._numbered = 0

    def visit(self, schema: dict[str, Any], name: str) -> str:
        if len(name) > _NAME_CHARS:  # children's names start with their parent's
            name = self._number(name[:_NAME_CHARS])
        rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
        kind = schema.get("type")
        if any(k in schema for k in _FIRST) or isinstance(kind, list):
            return str(super().visit(schema, name))
        if "enum" in schema:
            texts = [json_text(value) for value in schema["enum"]]
            return trie_rule(texts, rule_name, self._add_rule)
        if kind == "integer" and any(k in schema for k in BOUNDS):
            rule = integer_range_rule(*integer_bounds(schema, "format"))
            return self._add_rule(rule_name, f"({rule}) space")
        if (
            kind in (None, "array")
            and isinstance(schema.get("items"), dict)
            and _not_object(schema)
        ):
            item = self.visit(schema["items"], f"{name}{'-' if name else ''}item")
            items = self._repeat(item, schema, "Items", '"," space')
            return self._add_rule(rule_name, f'"[" space {items} "]" space')
        if kind == "string" and _plain_string(schema):
            char = self._add_primitive("char", PRIMITIVE_RULES["char"])
            return self._add_rule(
                rule_name, f'"\\"" {self._repeat(char, schema, "Length")} "\\"" space'
            )
        return str(super().visit(schema, name))

    def _repeat(self, item: str, schema: dict[str, Any], what: str, sep: str = "") -> str:
        """`item` minX to maxX times, `sep` between: the first ones in a row, then a chain of
        rules `more-k ::= (sep item more-(k-1))?`, none within another."""
        low, high = schema.get(f"min{what}") or 0, schema.get(f"max{what}")
        if high == 0:
            return ""
        step = f"{sep} {item}".strip()
        first = " ".join([item] + [step] * (low - 1)) if low else ""
        if high is None:
            return f"{first} ({step})*" if low else f"({item} ({step})*)?"
        more = ""
        for k in range(1, high - max(low, 1) + 1):
            more = self._add_rule(f"{item}-more{k}", f"({step} {more})?".replace(" )", ")"))
        if low:
            return f"{first} {more}".strip()
        return f"({item} {more})?".replace(" )", ")")

    def _add_rule(self, name: str, rule: str) -> str:
        """The port's, in constant time: the same rule under the same name is one rule."""
        base = INVALID_RULE_CHARS_RE.sub("-", name)[:_NAME_CHARS]
        key = self._keys.get((base, rule))
        if key is None:
            key = base if self._rules.get(base, rule) == rule else self._number(base)
            self._rules[key] = rule
            self._keys[(base, rule)] = key
        return key

    def _number(self, base: str) -> str:
        """`base` with a number no rule name has."""
        while True:
            self._numbered += 1
            if (key := f"{base}{self._numbered}") not in self._rules:
                return key

    def _generate_constant_rule(self, value: Any) -> str:
        return gbnf_literal(json_text(value))

    def _format_literal(self, literal: str) -> str:
        """The port hands property names here as JSON text written in ASCII."""
        try:
            return gbnf_literal(json_text(json.loads(literal)))
        except ValueError:  # a character of `not_literal`, which schemas do not reach
            return gbnf_literal(literal)


def _not_object(schema: dict[str, Any]) -> bool:
    """Whether the port's visit would not take `schema` (untyped or an array) as an object."""
    if schema.get("type") is not None:
        return True
    extra = schema.get("additionalProperties", True)
    return "properties" not in schema and extra is True and "allOf" not in schema


def _plain_string(schema: dict[str, Any]) -> bool:
    """A string whose grammar is its length: no pattern, and no format the port knows."""
    form = schema.get("format") or ""
    lengths = "minLength" in schema or "maxLength" in schema
    known = re.match(r"^uuid[1-5]?$", form) or f"{form}-string" in STRING_FORMAT_RULES
    return lengths and "pattern" not in schema and not known
