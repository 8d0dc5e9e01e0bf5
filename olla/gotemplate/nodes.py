"""The syntax tree of a parsed Go template: text, actions and if/range/with blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    names: tuple[str, ...]  # `.A.B` on dot; `.` itself is Field(())


@dataclass(frozen=True)
class Var:
    name: str  # `$`, `$x`
    names: tuple[str, ...] = ()  # `$x.A.B`


@dataclass(frozen=True)
class Const:
    value: Any


@dataclass(frozen=True)
class Func:
    name: str


@dataclass(frozen=True)
class Pipe:
    cmds: tuple[tuple[Arg, ...], ...]
    decl: tuple[str, ...] = ()
    assign: bool = False  # `$x = ...` rather than `$x := ...`


Arg = Field | Var | Const | Func | Pipe  # a Pipe argument is a parenthesized pipeline


@dataclass(frozen=True)
class Action:
    pipe: Pipe
    pos: int


@dataclass(frozen=True)
class Block:
    kind: str  # "if", "range", "with"; `else if` is a Block alone in `orelse`
    pipe: Pipe
    body: tuple[Node, ...]
    orelse: tuple[Node, ...]
    pos: int


Node = str | Action | Block  # a str is text
