"""How deep a request body nests, measured without recursion."""

from __future__ import annotations

import json
from typing import Any

import pytest

from olla.server.bodies import nests_deeper


def arrays(levels: int, leaf: Any = None) -> Any:
    value: Any = [] if leaf is None else [leaf]
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        ({}, 1),
        ([], 1),
        ({"a": 1, "b": "x", "c": None}, 1),
        ({"a": {}}, 2),
        ({"a": [1, 2, {"b": []}]}, 4),
        ([[], [[]], []], 3),
        ([0] * 1000, 1),
        (arrays(128), 128),
        (arrays(128, leaf=5), 128),
        ({"k": arrays(127, leaf={})}, 129),
        (json.loads("[" * 900 + "]" * 900), 900),  # deeper than recursion would follow
    ],
)
def test_depth_is_counted_by_levels_of_arrays_and_objects(value: Any, depth: int) -> None:
    assert not nests_deeper(value, depth)
    assert depth == 1 or nests_deeper(value, depth - 1)  # limits start at 1


@pytest.mark.parametrize("scalar", [0, "text", None, 1.5, True])
def test_a_scalar_does_not_nest(scalar: Any) -> None:
    assert not nests_deeper(scalar, 1)
