"""Bounds on what a JSON schema may ask of a grammar, checked before llama.cpp sees one.

A schema used to reach llama.cpp unchecked: `"maxItems": 1000000` became a million nested
optional groups, and llama.cpp's recursive grammar parser overflowed its 8 MiB stack between
18,000 and 19,000 levels (signal 11, every stream on the model lost); a 100,000-value enum kept
100,000 stacks open and took 52 s of CPU for 4 tokens. The defaults follow OpenAI's published
limits for structured outputs where those exist (5,000 properties, 1,000 enum values, 120,000
characters of names and values) and measurements where not.

Measured on this 2-core machine with SmolLM2 (49,152 tokens) while other test runs kept it
loaded 4 times over (best of 3; a larger vocabulary pays in proportion): a mask over the whole
vocabulary, which the sampler runs only when a drawn token breaks the grammar, costs 26-37 ms for
`"format": "json"` and 54-89 ms inside a free string. At the limits (mean/max over an answer):
21 anyOf branches of bounded strings 142/258 ms, a forced call among 60 tools 40/211 ms, 62
optional properties 24/98 ms, a 62-way enum 18/52 ms, 1,000 enum values 19/36 ms, maxItems
10,000 20/41 ms. The largest grammars take to check and write, then for llama.cpp to parse:
5,000 properties 218 + 18 ms, maxItems 10,000 (545 KiB) 66 + 42 ms, 880 KiB 111 + 84 ms.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from olla.backends.integer_ranges import BOUNDS, integer_bounds, integer_range_rule
from olla.backends.literal_trie import json_text, widest
from olla.errors import InvalidRequest

_OPAQUE = re.compile(r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]')  # "literals" and [classes]
_PAREN = re.compile(r"[()]")
_QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")
_JSON_TYPES = {
    '"': "string",
    "{": "object",
    "[": "array",
    "t": "boolean",
    "f": "boolean",
    "n": "null",
}
_VALUE_WIDTH = 8  # an untyped value: object, array, string, number, true, false, null
_LEAF_WIDTH = 3  # inside a string: a plain character, an escape, or the closing quote


@dataclass(frozen=True)
class SchemaLimits:
    """What one `format` schema may ask; each field is the most allowed."""

    depth: int = 64  # JSON nesting, following $ref; OpenAI's 10 object levels need about 41
    properties: int = 5_000  # object properties in all
    text: int = 120_000  # characters of property names and enum and const values, in all
    enum_values: int = 1_000  # enum values in all
    repeat: int = 10_000  # minItems, maxItems, minLength, maxLength: a rule per optional item
    pattern_chars: int = 1_000
    pattern_repeat: int = 500  # {m,n} in a pattern nests n - m groups in the GBNF
    alternatives: int = 64  # open at one point: 0.5-1.2 ms each per masked token
    grammar_chars: int = 1 << 20  # the GBNF text, which llama.cpp parses anew for each request
    grammar_nesting: int = 1_000  # parenthesised groups in the GBNF within one another


def check_grammar(gbnf: str, limits: SchemaLimits) -> None:
    """Refuse a grammar too large or too deeply nested to hand to llama.cpp."""
    if len(gbnf) > limits.grammar_chars:
        raise InvalidRequest(
            f'field "format": the grammar for this JSON schema is {len(gbnf):,} characters, '
            f"more than the {limits.grammar_chars:,} allowed; lower maxItems, maxLength and "
            "pattern counts, or send fewer properties and enum values"
        )
    depth = deepest = 0
    for paren in _PAREN.findall(_OPAQUE.sub("", gbnf)):  # groups outside literals and classes
        depth += 1 if paren == "(" else -1
        deepest = max(deepest, depth)
    if deepest > limits.grammar_nesting:
        raise InvalidRequest(
            f'field "format": the grammar for this JSON schema nests {deepest} groups deep, '
            f"more than the {limits.grammar_nesting} allowed; lower the {{m,n}} counts in patterns"
        )


def check_schema(schema: dict[str, Any], limits: SchemaLimits) -> None:
    """Refuse a schema that asks more than `limits`, naming the field and the bound."""
    _check_nesting(schema, limits.depth)
    _Walk(schema, limits).visit(schema, "format", 0)


def _check_nesting(document: Any, limit: int) -> None:
    """JSON nesting (objects and arrays), without recursion: every later walk recurses."""
    work = [(document, "format", 0)]
    while work:
        value, where, depth = work.pop()
        if depth > limit:
            raise InvalidRequest(
                f'field "{where}": the JSON schema nests more than {limit} levels deep; flatten it'
            )
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, sub in items:
            if isinstance(sub, (dict, list)):
                place = f"{where}.{key}" if isinstance(value, dict) else f"{where}[{key}]"
                work.append((sub, place, depth + 1))


class _Walk:
    """One walk over a schema, following $ref, that counts what the grammar will hold."""

    def __init__(self, root: dict[str, Any], limits: SchemaLimits) -> None:
        self.root = root
        self.limits = limits
        self.properties = self.text = self.enum_values = 0
        self.refs: dict[str, tuple[int, int] | None] = {}  # height and width; None: walking

    def visit(self, node: Any, where: str, depth: int) -> tuple[int, int]:
        """The height (JSON levels below) and width (alternatives open at one point, at most)
        of the schema `node`, found at `depth`; InvalidRequest past a limit."""
        if depth > self.limits.depth:
            self._too_deep(where)
        if not isinstance(node, dict):
            return 0, _VALUE_WIDTH
        if isinstance(ref := node.get("$ref"), str):
            return self._ref(ref, where, depth)
        height, width = 0, 0
        for key in ("anyOf", "oneOf", "allOf"):
            if isinstance(node.get(key), list):
                h, w = self._union(node[key], f"{where}.{key}", depth + 2)
                height, width = max(height, h + 2), max(width, w)
        if isinstance(node.get("properties"), dict) or "additionalProperties" in node:
            h, w = self._object(node, where, depth)
            height, width = max(height, h), max(width, w)
        for key in ("items", "prefixItems"):
            if key in node:
                h, w = self._items(node, key, where, depth)
                height, width = max(height, h), max(width, w)
        width = max(width, self._leaf(node, where))
        if width > self.limits.alternatives:
            raise InvalidRequest(
                f'field "{where}": the answer could have {width} alternatives open at one '
                f"point here, more than the {self.limits.alternatives} allowed (each costs about "
                "1 ms per masked token); make properties required, tell anyOf branches apart "
                "by a first property with a const value, or offer fewer choices"
            )
        return height, width

    def _too_deep(self, where: str) -> None:
        raise InvalidRequest(
            f'field "{where}": the JSON schema nests more than {self.limits.depth} levels deep, '
            "counting what $ref points to; flatten it"
        )

    def _ref(self, ref: str, where: str, depth: int) -> tuple[int, int]:
        if ref in self.refs:
            known = self.refs[ref]
            if known is None:  # recursion: what it opens is counted where it is walked
                return 0, 1
            if depth + known[0] > self.limits.depth:
                self._too_deep(where)
            return known
        target = _resolve(self.root, ref)
        if target is None:
            return 0, 1  # not a local reference: the converter refuses it by name
        self.refs[ref] = None
        found = self.visit(target, f"format{ref.split('#')[-1].replace('/', '.')}", depth)
        self.refs[ref] = found
        return found

    def _union(self, branches: list[Any], where: str, depth: int) -> tuple[int, int]:
        """anyOf, oneOf, allOf: branches are open together until their texts part, so widths add
        up among branches that begin alike: of one type, and unless a const tells them apart."""
        height, anything = 0, 0  # anything: the widths of branches that may begin as any
        groups: dict[tuple[str, str | None], int] = {}  # lead -> the sum of its branches' widths
        for i, branch in enumerate(branches):
            h, w = self.visit(branch, f"{where}[{i}]", depth)
            height = max(height, h)
            if (lead := _lead(branch, self.root)) is None:
                anything += w
            else:
                groups[lead] = groups.get(lead, 0) + w
        plain = {kind: w for (kind, tag), w in groups.items() if tag is None}
        widest_group = max(
            (
                w + (plain.get(kind, 0) if tag is not None else 0)
                for (kind, tag), w in groups.items()
            ),
            default=0,
        )
        return height, max(len(branches), widest_group + anything)

    def _object(self, node: dict[str, Any], where: str, depth: int) -> tuple[int, int]:
        properties = node.get("properties") or {}
        if not isinstance(properties, dict):
            return 0, _VALUE_WIDTH
        self.properties += len(properties)
        self.text += sum(len(name) for name in properties)
        self._totals(where)
        required = node.get("required")
        required = set(required) if isinstance(required, list) else set()
        optional = sum(1 for name in properties if name not in required)
        height, width = 0, 0
        for name, sub in properties.items():
            h, w = self.visit(sub, f"{where}.properties.{name}", depth + 2)
            height, width = max(height, h + 2), max(width, w)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            h, w = self.visit(extra, f"{where}.additionalProperties", depth + 1)
            height, width = max(height, h + 1), width + w
        elif extra is not False and extra is not None:
            width += _VALUE_WIDTH
        open_keys = optional + (1 if extra not in (False, None) else 0)
        return height, max(width, open_keys + 2)

    def _items(self, node: dict[str, Any], key: str, where: str, depth: int) -> tuple[int, int]:
        items = node[key]
        if isinstance(items, list):
            found = [self.visit(s, f"{where}.{key}[{i}]", depth + 2) for i, s in enumerate(items)]
            return max((h + 2 for h, _ in found), default=0), max((w for _, w in found), default=1)
        low, high = self._count(node, "minItems", where), self._count(node, "maxItems", where)
        if high is not None and low > high:
            raise InvalidRequest(f'field "{where}": no array has {low} to {high} items')
        height, width = self.visit(items, f"{where}.{key}", depth + 1)
        return height + 1, max(width, _LEAF_WIDTH + 1)  # after an item: more of it, ",", "]"

    def _leaf(self, node: dict[str, Any], where: str) -> int:
        """The width of what a string, number, enum or const itself asks."""
        if "enum" in node:
            return self._enum(node["enum"], f"{where}.enum")
        if "const" in node:
            self.text += len(json_text(node["const"]))
            self._totals(where)
            return 1
        kind = node.get("type")
        if kind == "integer" and any(k in node for k in BOUNDS):
            return integer_range_rule(*integer_bounds(node, where)).count("|") + 1
        if kind == "string":
            low, high = self._count(node, "minLength", where), self._count(node, "maxLength", where)
            if high is not None and low > high:
                raise InvalidRequest(f'field "{where}": no string is {low} to {high} long')
            if isinstance(pattern := node.get("pattern"), str):
                return self._pattern(pattern, f"{where}.pattern")
            return _LEAF_WIDTH
        return _VALUE_WIDTH if kind in (None, "object", "array") or isinstance(kind, list) else 3

    def _enum(self, values: Any, where: str) -> int:
        if not isinstance(values, list) or not values:
            raise InvalidRequest(f'field "{where}" must be a list of at least one value')
        self.enum_values += len(values)
        self._totals(where)  # before writing out 100,000 values
        texts = [json_text(v) for v in values]
        self.text += sum(len(t) for t in texts)
        self._totals(where)
        return widest(texts)

    def _pattern(self, pattern: str, where: str) -> int:
        if len(pattern) > self.limits.pattern_chars:
            raise InvalidRequest(
                f'field "{where}" is {len(pattern)} characters, more than the '
                f"{self.limits.pattern_chars} allowed"
            )
        for match in _QUANTIFIER.finditer(pattern):
            for number in match.groups():
                if number and int(number) > self.limits.pattern_repeat:
                    raise InvalidRequest(
                        f'field "{where}": {match.group(0)} repeats more than the '
                        f"{self.limits.pattern_repeat} times a pattern may; use maxLength "
                        "for a long string"
                    )
        return _LEAF_WIDTH + pattern.count("|")

    def _count(self, node: dict[str, Any], key: str, where: str) -> Any:
        """A repetition count (0 when absent, None for an absent maximum), within `repeat`."""
        value = node.get(key)
        if value is None:
            return None if key.startswith("max") else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidRequest(f'field "{where}": {key} must be a whole number, 0 or more')
        if value > self.limits.repeat:
            raise InvalidRequest(
                f'field "{where}": {key} is {value}, more than the {self.limits.repeat} a '
                f"grammar can count (each one is a rule); leave out {key}, or check it yourself"
            )
        return value

    def _totals(self, where: str) -> None:
        for count, limit, what in (
            (self.properties, self.limits.properties, "object properties"),
            (self.text, self.limits.text, "characters of property names and enum values"),
            (self.enum_values, self.limits.enum_values, "enum values"),
        ):
            if count > limit:
                raise InvalidRequest(
                    f'field "{where}": the JSON schema has more than {limit:,} {what} in all; '
                    "send a smaller schema"
                )


def _resolve(root: dict[str, Any], ref: str) -> Any:
    """The node a local `#/...` reference points to, or None."""
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _lead(node: Any, root: dict[str, Any]) -> tuple[str, str | None] | None:
    """How every answer to `node` begins, to tell union branches apart: (its JSON type, a tag
    that no other branch of that type shares, or None), or None when it may begin as anything.
    A const's tag is its text; an object's is its first property, if required and a const."""
    for _ in range(8):  # a few $ref hops; a longer chain is simply not told apart
        if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
            break
        node = _resolve(root, node["$ref"])
    if not isinstance(node, dict) or any(k in node for k in ("anyOf", "oneOf", "allOf", "$ref")):
        return None
    if "const" in node:
        text = json.dumps(node["const"])
        return _JSON_TYPES.get(text[0], "number"), text
    kind = node.get("type")
    if not isinstance(kind, str) or "enum" in node:
        return None
    kind = "number" if kind == "integer" else kind
    properties = node.get("properties")
    if kind != "object" or not isinstance(properties, dict):
        return kind, None
    required = node.get("required") or []
    first = next((name for name in properties if name in required), None)
    value = _lead(properties[first], root) if first is not None else None
    if value is not None and value[1] is not None:
        return kind, json.dumps([first, value[1]])
    return kind, None
