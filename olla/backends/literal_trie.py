"""A set of literal texts (an enum's JSON values) as GBNF with their shared prefixes factored out.

llama.cpp's grammar sampler keeps one stack per alternative still open, and a full-vocabulary mask
costs about 1 ms per stack on SmolLM2's 49,152 tokens (measured on this 2-core machine: 17 ms for
one stack, 110-140 ms for 100). As a flat alternation, an enum of N strings keeps N stacks open
once the opening quote is written: 1,000 values cost 0.9-1.2 s per mask, 100,000 values 52 s for
4 tokens. Factored as a trie, the stacks open at any point are the distinct characters that may
come next there: a few dozen for real enums (`olla.backends.schema_limits` bounds them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

_SURROGATE = re.compile("[\\ud800-\\udfff]")


def json_text(value: Any) -> str:
    """`value` as the grammar asks for it: JSON with non-ASCII characters written as themselves
    (as llama-cpp-python's converter did, by accident of its escaping), which a model writes
    more readily than `\\u` escapes."""
    return json.dumps(value, ensure_ascii=False)


def gbnf_literal(text: str) -> str:
    """`text` as a GBNF string literal. llama-cpp-python's converter escaped neither backslashes
    nor tabs, so an enum value or property name with a backslash asked for other text, and one
    with a quote broke the grammar. A lone surrogate (not UTF-8) stays a `\\u` escape."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    escaped = escaped.replace("\r", "\\r").replace("\t", "\\t")
    return '"' + _SURROGATE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", escaped) + '"'


@dataclass
class Node:
    """A point where texts part: each branch is (the literal that follows, the node after it or
    None where the text ends); `ends` when a text may also end here."""

    ends: bool = False
    branches: list[tuple[str, int | None]] = field(default_factory=list)

    @property
    def width(self) -> int:
        """How many alternatives are open here (one stack each in llama.cpp)."""
        return len(self.branches) + (1 if self.ends and self.branches else 0)


def factor(texts: Iterable[str]) -> list[Node]:
    """The trie of `texts` (non-empty strings), compressed: node 0 is the root. Iterative, in
    time linear in the total length (sorted texts: a run's common prefix is its ends')."""
    ordered = sorted(set(texts))
    nodes = [Node()]
    work = [(0, 0, len(ordered), 0)]  # (node, first text, end, characters already matched)
    while work:
        index, lo, hi, offset = work.pop()
        node = nodes[index]
        if len(ordered[lo]) == offset:  # sorted: a text that ends here comes first
            node.ends, lo = True, lo + 1
        while lo < hi:
            run = lo + 1
            while run < hi and ordered[run][offset] == ordered[lo][offset]:
                run += 1
            common = _common_prefix(ordered[lo], ordered[run - 1], offset)
            child: int | None = None
            if run - lo > 1 or len(ordered[lo]) > common:
                child = len(nodes)
                nodes.append(Node())
                work.append((child, lo, run, common))
            node.branches.append((ordered[lo][offset:common], child))
            lo = run
    return nodes


def widest(texts: Iterable[str]) -> int:
    """The most alternatives open at one point of the factored texts."""
    return max(node.width for node in factor(texts))


def trie_rule(texts: Iterable[str], name: str, add_rule: Callable[[str, str], str]) -> str:
    """Add GBNF rules matching exactly `texts` through `add_rule(name, body) -> key`; the key
    of the root. Every reference stands last in its alternative, so llama.cpp's stacks do not
    grow with the trie's depth, and a child is added before the rule that names it."""
    nodes = factor(texts)
    keys = [""] * len(nodes)
    for index in range(len(nodes) - 1, -1, -1):  # children come after their parents
        node = nodes[index]
        alternatives = " | ".join(
            gbnf_literal(text) + ("" if child is None else f" {keys[child]}")
            for text, child in node.branches
        )
        body = f"({alternatives})?" if node.ends else alternatives
        keys[index] = add_rule(f"{name}-{index}" if index else name, body)
    return keys[0]


def _common_prefix(a: str, b: str, start: int) -> int:
    """The length of the common prefix of `a` and `b`, known to agree before `start`."""
    end = min(len(a), len(b))
    while start < end and a[start] == b[start]:
        start += 1
    return start
