"""JSON schema → GBNF: integer ranges, chained repetitions, enums as tries, keywords olla cannot
enforce, and the bounds that keep a schema from crashing or stalling a runner.

Grammars are checked on llama.cpp's own grammar sampler with SmolLM2's vocabulary (loaded alone,
without weights), the way a runner uses them.
"""

from __future__ import annotations

import ctypes
import json
import re
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from olla.backends.integer_ranges import integer_range_rule
from olla.backends.json_schema import schema_to_gbnf
from olla.backends.llama_grammar import GrammarConstraint
from olla.backends.schema_limits import SchemaLimits, check_grammar
from olla.errors import InvalidRequest
from olla.tool_calls import call_schema

bound = st.one_of(st.none(), st.integers(-5000, 5000))


class Grammars:
    """Whether a grammar accepts a text, on llama.cpp's grammar sampler."""

    def __init__(self, lc: Any, vocab: Any) -> None:
        self.lc, self.vocab = lc, vocab
        self.size = int(lc.llama_vocab_n_tokens(vocab))
        self.eos = int(lc.llama_vocab_eos(vocab))

    def tokens(self, text: str) -> list[int]:
        data = text.encode()
        buffer = (self.lc.llama_token * (len(data) + 8))()
        count = self.lc.llama_tokenize(
            self.vocab, data, len(data), buffer, len(buffer), False, False
        )
        return list(buffer[:count])

    def accepts(self, gbnf: str, text: str) -> bool:
        constraint = GrammarConstraint(self.lc, self.vocab, self.size, gbnf)
        try:
            for token in self.tokens(text):
                if not constraint.allows(token):
                    return False
                constraint.accept(token)
            return constraint.allows(self.eos)  # complete: the answer may end here
        finally:
            constraint.close()

    def language(self, schema: dict[str, Any], texts: list[str]) -> set[str]:
        """Which of `texts` the grammar for `schema` accepts."""
        gbnf = schema_to_gbnf(schema)
        return {text for text in texts if self.accepts(gbnf, text)}


@pytest.fixture(scope="module")
def grammars(smollm2_gguf: Path) -> Iterator[Grammars]:
    import llama_cpp as lc

    lc.llama_backend_init()
    params = lc.llama_model_default_params()
    params.vocab_only = True
    model = lc.llama_model_load_from_file(str(smollm2_gguf).encode(), params)
    assert model, "SmolLM2's vocabulary did not load"
    yield Grammars(lc, lc.llama_model_get_vocab(model))
    lc.llama_model_free(ctypes.c_void_p(model))


def as_regex(rule: str) -> re.Pattern[str]:
    # the rule uses only literals, [a-b] classes, {m,n} counts, | and ( ): regex syntax as is
    return re.compile(rule.replace('"', "").replace(" ", ""))


@given(bound, bound)
def test_an_integer_range_rule_matches_exactly_the_integers_in_range(
    lo: int | None, hi: int | None
) -> None:
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    pattern = as_regex(integer_range_rule(lo, hi))
    for n in range(-6000, 6001, 7):
        inside = (lo is None or n >= lo) and (hi is None or n <= hi)
        assert bool(pattern.fullmatch(str(n))) == inside, (lo, hi, n)
    for edge in {lo, hi} - {None}:
        assert pattern.fullmatch(str(edge))
    assert not pattern.fullmatch("007") and not pattern.fullmatch("-0")


def test_bounds_on_integers_reach_the_grammar() -> None:
    age = {"type": "integer", "minimum": 0, "maximum": 150}
    grammar = schema_to_gbnf({"type": "object", "properties": {"age": age}, "required": ["age"]})
    assert '"1" [0-4] [0-9]{1}' in grammar and "age" in grammar


def test_draft_4_exclusive_bounds_exclude_the_bound(grammars: Grammars) -> None:
    schema = {"type": "integer", "minimum": 0, "exclusiveMinimum": True, "maximum": 10}
    schema["exclusiveMaximum"] = True
    assert grammars.language(schema, ["0", "1", "9", "10"]) == {"1", "9"}


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, '"uniqueItems"'),
        (
            {"type": "object", "properties": {"x": {"type": "number", "maximum": 1.5}}},
            'field "format.properties.x": olla enforces minimum and maximum on integers only',
        ),
        ({"type": "integer", "minimum": 5, "maximum": 2}, "no integer lies between 5 and 2"),
        ({"type": "integer", "maximum": "9"}, 'field "format": maximum must be a number'),
    ],
)
def test_what_olla_cannot_enforce_is_refused_by_name(schema: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        schema_to_gbnf(schema)


@pytest.mark.parametrize(("low", "high"), [(0, 0), (0, 1), (0, 3), (2, 4), (3, 3), (2, None)])
def test_item_and_length_counts_are_exact(grammars: Grammars, low: int, high: int | None) -> None:
    def bounded(schema: dict[str, Any], kind: str) -> dict[str, Any]:
        counts = {f"min{kind}": low} if low else {}
        return {**schema, **counts, **({f"max{kind}": high} if high is not None else {})}

    inside = {k for k in range(7) if low <= k and (high is None or k <= high)}
    arrays = [json.dumps(["ab"] * k) for k in range(7)]
    array = bounded({"type": "array", "items": {"type": "string"}}, "Items")
    assert grammars.language(array, arrays) == {arrays[k] for k in inside}
    strings = [json.dumps("é" * k) for k in range(7)]
    assert grammars.language(bounded({"type": "string"}, "Length"), strings) == {
        strings[k] for k in inside
    }


def test_a_long_repetition_is_a_chain_of_rules_not_nested_groups(grammars: Grammars) -> None:
    # the port nested maxItems optional groups; llama.cpp's parser recursed once per level
    # and a million levels overflowed its stack (signal 11)
    gbnf = schema_to_gbnf({"type": "array", "items": {"type": "string"}, "maxItems": 10_000})
    check_grammar(gbnf, SchemaLimits(grammar_nesting=2))
    assert grammars.accepts(gbnf, json.dumps(["a"] * 40))


ODD_VALUES = ["ab", "abc", "a", 'say "hi"', "back\\slash", "tab\there", "line\nbreak", "naïve"]
ODD_VALUES += ["日本", 0, 10, 1.5, None, True, [1, "x"], {"k": "v"}]


def test_an_enum_accepts_exactly_its_values(grammars: Grammars) -> None:
    # the port escaped no backslash: "back\\slash" asked for a backspace, a quote broke the grammar
    texts = [json.dumps(v, ensure_ascii=False) for v in ODD_VALUES]
    near = ['"b"', '"abcd"', '"ab', "1", "100", '"back\\\\\\\\slash"', "nul", '"tab\\u0009here"']
    assert grammars.language({"enum": ODD_VALUES}, texts + near) == set(texts)


def test_odd_property_names_are_asked_for_as_json_writes_them(grammars: Grammars) -> None:
    names = [v for v in ODD_VALUES if isinstance(v, str)]
    schema = {"type": "object", "properties": {n: {"const": 1} for n in names}, "required": names}
    answer = "{" + ", ".join(f"{json.dumps(n, ensure_ascii=False)}: 1" for n in names) + "}"
    assert grammars.language(schema, [answer]) == {answer}


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def ref_chain(links: int) -> dict[str, Any]:
    """`links` definitions, each an object whose one property is the next."""
    defs: dict[str, Any] = {
        f"d{i}": {"type": "object", "properties": {"a": {"$ref": f"#/$defs/d{i + 1}"}}}
        for i in range(links)
    }
    defs[f"d{links}"] = {"type": "string"}
    return {"$ref": "#/$defs/d0", "$defs": defs}


def words(count: int, length: int = 8) -> list[str]:
    return [f"{i:05d}" + "x" * (length - 5) for i in range(count)]


STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
OVER_THE_LIMITS = [
    (
        {**STRINGS, "maxItems": 1_000_000},
        'field "format": maxItems is 1000000, more than the 10000',
    ),
    (
        {"type": "object", "properties": {"s": {"type": "string", "maxLength": 10**6}}},
        'field "format.properties.s": maxLength is 1000000',
    ),
    ({**STRINGS, "minItems": 10_001}, "minItems is 10001"),
    ({**STRINGS, "minItems": "3"}, "minItems must be a whole number"),
    ({**STRINGS, "minItems": 5, "maxItems": 2}, "no array has 5 to 2 items"),
    ({"type": "string", "minLength": 3, "maxLength": 1}, "no string is 3 to 1 long"),
    ({"enum": []}, 'field "format.enum" must be a list of at least one value'),
    ({"enum": list(range(100_000))}, "more than 1,000 enum values in all"),
    (
        {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5001)}},
        "more than 5,000 object properties in all",
    ),
    ({"enum": words(900, 150)}, "more than 120,000 characters of property names and enum values"),
    (nested(10_000), "nests more than 64 levels deep; flatten it"),
    (ref_chain(40), "nests more than 64 levels deep, counting what $ref points to"),
    ({"type": "string", "pattern": "^" + "a" * 1001 + "$"}, "1003 characters, more than the 1000"),
    ({"type": "string", "pattern": "^[a-z]{0,1000}$"}, "{0,1000} repeats more than the 500"),
    (
        {"anyOf": [{"type": "string", "maxLength": i + 1} for i in range(30)]},
        'field "format": the answer could have 90 alternatives open at one point',
    ),
    (
        {"type": "object", "properties": {"o": {"properties": {f"p{i}": {} for i in range(70)}}}},
        'field "format.properties.o": the answer could have 72 alternatives',
    ),
    (
        {"enum": [c + "x" for c in string.ascii_letters + string.digits + "!#$%&"]},
        "67 alternatives",
    ),
]


@pytest.mark.parametrize(("schema", "message"), OVER_THE_LIMITS)
def test_a_schema_over_the_limits_is_refused_by_name(schema: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)) as caught:
        schema_to_gbnf(schema)
    assert caught.value.status == 400


def tools(count: int) -> list[dict[str, Any]]:
    arguments = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    }
    return [
        {"type": "function", "function": {"name": f"tool_{i}", "parameters": arguments}}
        for i in range(count)
    ]


def model(i: int) -> dict[str, Any]:
    """A model as pydantic writes it: a nested model by $ref, optional as anyOf with null."""
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "child": {"anyOf": [{"$ref": f"#/$defs/M{i + 1}"}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
        },
        "required": ["name", "child"],
    }


PYDANTIC_LIKE = {**model(0), "$defs": {f"M{i}": model(i) for i in range(1, 9)}}
PYDANTIC_LIKE["$defs"]["M9"] = {"type": "object", "properties": {"leaf": {"type": "boolean"}}}
NODE = {
    "type": "object",
    "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
}
TREE = {**NODE, "$defs": {"node": NODE}}  # recursive


@pytest.mark.parametrize(
    "schema",
    [
        call_schema(tools(60)),  # a forced call among 60 tools: the names tell them apart
        PYDANTIC_LIKE,
        TREE,
        {"enum": words(1000)},
        {"enum": [c + "x" for c in string.ascii_letters + string.digits]},
        {"type": "object", "properties": {f"p{i}": {} for i in range(62)}},
        {
            "type": "object",
            "properties": {f"p{i}": {"type": "integer"} for i in range(5000)},
            "required": [f"p{i}" for i in range(5000)],
        },
        {"type": "string", "pattern": "^[a-z]{1,500}(-[a-z0-9]{0,500}){0,3}$"},
        nested(31),
    ],
    ids=[
        "tools",
        "pydantic",
        "tree",
        "enum",
        "enum-62",
        "optional",
        "properties",
        "pattern",
        "deep",
    ],
)
def test_real_schemas_fit_the_limits(grammars: Grammars, schema: dict[str, Any]) -> None:
    gbnf = schema_to_gbnf(schema)
    constraint = GrammarConstraint(grammars.lc, grammars.vocab, grammars.size, gbnf)
    constraint.close()


def test_a_schema_reached_through_its_refs_answers_as_written(grammars: Grammars) -> None:
    answer = {"name": "a", "child": {"name": "b", "child": None, "tags": ["x"]}}
    assert grammars.accepts(schema_to_gbnf(PYDANTIC_LIKE), json.dumps(answer))
    tree = {"kids": [{"kids": []}, {"kids": [{}]}]}
    assert grammars.accepts(schema_to_gbnf(TREE), json.dumps(tree))


def test_the_grammar_itself_is_bounded_in_size_and_nesting() -> None:
    with pytest.raises(InvalidRequest, match="characters, more than the 1,000 allowed"):
        schema_to_gbnf({**STRINGS, "maxItems": 100}, SchemaLimits(grammar_chars=1000))
    with pytest.raises(InvalidRequest, match="nests 20 groups deep, more than the 19 allowed"):
        schema_to_gbnf({"type": "string", "pattern": "^a{0,20}$"}, SchemaLimits(grammar_nesting=19))


def test_thousands_of_properties_named_alike_convert_in_linear_time() -> None:
    # names in Chinese all become "-" in a rule name; the port then searched "-0", "-1", ...
    # for a free one each time: 19 s for 5,000 properties
    names = [chr(0x4E00 + i) for i in range(5000)]
    schema = {"type": "object", "properties": {n: {"type": "string"} for n in names}}
    schema["required"] = names
    start = time.monotonic()
    schema_to_gbnf(schema)
    assert time.monotonic() - start < 5
