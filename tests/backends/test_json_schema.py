"""JSON schema → GBNF: integer ranges as digit patterns, and keywords olla cannot enforce."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from olla.backends.json_schema import integer_range_rule, schema_to_gbnf
from olla.errors import InvalidRequest

bound = st.one_of(st.none(), st.integers(-5000, 5000))


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


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, '"uniqueItems"'),
        (
            {"type": "object", "properties": {"x": {"type": "number", "maximum": 1.5}}},
            'field "format.properties.x": olla enforces minimum and maximum on integers only',
        ),
        ({"type": "integer", "minimum": 5, "maximum": 2}, "no integer lies between 5 and 2"),
    ],
)
def test_what_olla_cannot_enforce_is_refused_by_name(schema: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        schema_to_gbnf(schema)
