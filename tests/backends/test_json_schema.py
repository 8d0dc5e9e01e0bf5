"""JSON schema → GBNF: integer ranges, chained repetitions, enums as tries, and keywords olla
cannot enforce.

Grammars are checked on llama.cpp's own grammar sampler with SmolLM2's vocabulary (loaded alone,
without weights), the way a runner uses them.
"""

from __future__ import annotations

import ctypes
import json
import re
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
from olla.errors import InvalidRequest

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


def test_thousands_of_properties_named_alike_convert_in_linear_time() -> None:
    # names in Chinese all become "-" in a rule name; the port then searched "-0", "-1", ...
    # for a free one each time: 19 s for 5,000 properties
    names = [chr(0x4E00 + i) for i in range(5000)]
    schema = {"type": "object", "properties": {n: {"type": "string"} for n in names}}
    schema["required"] = names
    start = time.monotonic()
    schema_to_gbnf(schema)
    assert time.monotonic() - start < 5
