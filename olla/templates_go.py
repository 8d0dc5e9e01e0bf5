"""Go `text/template`, the subset Ollama Modelfile TEMPLATEs use: parse once, render many times.

On purpose unlike Go: a missing key renders as "" (Ollama's data never shows `<no value>`), maps
and lists print as JSON (as Ollama's api types do), and `.ToolCalls` also finds `tool_calls`.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, NoReturn

from olla.errors import InvalidRequest


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


class GoTemplate:
    """A parsed Go template; `render` takes a mapping as the root (`.` and `$`)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.nodes: tuple[Node, ...] = _Parser(source).parse()

    @property
    def identifiers(self) -> frozenset[str]:
        """Field and variable names used, lowercased (Ollama's `Template.Vars`)."""
        names: set[str] = set()
        _collect(self.nodes, names)
        return frozenset(n.lower() for n in names)

    def render(self, data: Mapping[str, Any]) -> str:
        return _Exec(self.source, data).run(self.nodes)

    def appending_response(self) -> GoTemplate:
        """This template with `{{ .Response }}` added at the end."""
        return self._derive((*self.nodes, Action(Pipe(((Field(("Response",)),),)), 0)))

    def cut_after_response(self) -> GoTemplate:
        """Everything after the first `.Response` output dropped, as Ollama's `deleteNode`."""
        return self._derive(_cut(self.nodes, [False]))

    def _derive(self, nodes: tuple[Node, ...]) -> GoTemplate:
        copy = object.__new__(GoTemplate)
        copy.source, copy.nodes = self.source, nodes
        return copy


def _fail(src: str, pos: int, message: str) -> NoReturn:
    line = src.count("\n", 0, pos) + 1
    raise InvalidRequest(
        f"template: line {line}, column {pos - src.rfind(chr(10), 0, pos)}: {message}"
    )


# --- lexing: text and actions; `{{- ` and ` -}}` trim all adjacent whitespace, as Go's lexer

_SPACE = " \t\r\n"
_TOKEN = re.compile(
    r"""(?P<str>"(?:[^"\\\n]|\\.)*")|(?P<raw>`[^`]*`)|(?P<op>:=|[=()|,])|(?P<var>\$\w*)"""
    r"|(?P<field>(?:\.[^\W\d]\w*)+)|(?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<dot>\.)|(?P<ident>[^\W\d]\w*)"
)
_BAD_ESCAPE = re.compile(r"\\(?![abfnrtv\\\"0-7xuU])")
_KEYWORDS = frozenset("if else end range with break continue define template block".split())


class _Tok(NamedTuple):
    kind: str
    text: str
    pos: int
    end: int


def _space_at(src: str, i: int) -> bool:
    return i < len(src) and src[i] in _SPACE


def _lex(src: str) -> list[str | tuple[list[_Tok], int]]:
    """Text pieces and (tokens, offset) for each action; comments dropped."""
    items: list[str | tuple[list[_Tok], int]] = []
    pos, trim = 0, False
    while True:
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        text = text.lstrip(_SPACE) if trim else text
        if start < 0:
            return [*items, text] if text else items
        i = start + 2
        if src.startswith("-", i) and _space_at(src, i + 1):  # `{{-3}}` is the number -3
            text, i = text.rstrip(_SPACE), i + 2
        if text:
            items.append(text)
        if src.startswith("/*", i):
            end = src.find("*/", i + 2)
            if end < 0:
                _fail(src, start, "unclosed comment")
            pos, trim = _close_delim(src, end + 2, start, "comment ends before closing delimiter")
        else:
            toks, pos, trim = _lex_action(src, i, start)
            items.append((toks, start))


def _close_delim(src: str, i: int, start: int, message: str) -> tuple[int, bool]:
    if _space_at(src, i) and src.startswith("-}}", i + 1):
        return i + 4, True
    if src.startswith("}}", i):
        return i + 2, False
    _fail(src, start, message)


def _lex_action(src: str, i: int, start: int) -> tuple[list[_Tok], int, bool]:
    toks: list[_Tok] = []
    while not (src.startswith("}}", i) or _space_at(src, i) and src.startswith("-}}", i + 1)):
        if i >= len(src):
            _fail(src, start, "unclosed action")
        if src[i] in _SPACE:
            i += 1
            continue
        m = _TOKEN.match(src, i)
        if m is None:
            quote = src[i] in '"`'
            _fail(src, i, "unterminated quoted string" if quote else f"unexpected {src[i]!r}")
        toks.append(_Tok(m.lastgroup or "", m.group(), i, m.end()))
        i = m.end()
    return (toks, *_close_delim(src, i, start, ""))


# --- parsing


@dataclass
class _Frame:
    kind: str
    pipe: Pipe
    pos: int
    mark: int  # len(vars) before the block: its variables go out of scope at {{end}}
    chained: bool  # opened by `{{ else if }}`: closed by its parent's {{end}}
    body: list[Node] = field(default_factory=list)
    orelse: list[Node] | None = None

    def target(self) -> list[Node]:
        return self.body if self.orelse is None else self.orelse

    def node(self) -> Block:
        return Block(self.kind, self.pipe, tuple(self.body), tuple(self.orelse or ()), self.pos)


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.root: list[Node] = []
        self.stack: list[_Frame] = []
        self.vars = ["$"]  # declared variables: Go rejects undefined ones at parse time
        self.toks: list[_Tok] = []  # the action being parsed, and the position in it
        self.i = 0

    def parse(self) -> tuple[Node, ...]:
        for item in _lex(self.src):
            if isinstance(item, str):
                self._emit(item)
            else:
                self._action(*item)
        if self.stack:
            frame = next(f for f in reversed(self.stack) if not f.chained)
            self._fail(frame.pos, f"missing {{{{end}}}} for {{{{{frame.kind}}}}}")
        return tuple(self.root)

    def _fail(self, pos: int, message: str) -> NoReturn:
        _fail(self.src, pos, message)

    def _emit(self, node: Node) -> None:
        (self.stack[-1].target() if self.stack else self.root).append(node)

    def _peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _next(self) -> _Tok:
        self.i += 1
        return self.toks[self.i - 1]

    def _action(self, toks: list[_Tok], pos: int) -> None:
        head = toks[0].text if toks and toks[0].kind == "ident" else ""
        self.toks, self.i = toks, int(head in _KEYWORDS)
        if head in ("if", "range", "with"):
            self._open(head, pos, chained=False)
        elif head == "else":
            self._else(pos)
        elif head == "end":
            if (extra := self._peek()) is not None:
                self._fail(extra.pos, f"unexpected {extra.text!r} in end")
            self._close(pos)
        elif head in _KEYWORDS:
            self._fail(pos, f"{{{{{head}}}}} is not supported")
        else:
            self._emit(Action(self._pipe(pos, 1, "command", top=True), pos))

    def _open(self, kind: str, pos: int, chained: bool) -> None:
        mark = len(self.vars)
        pipe = self._pipe(pos, 2 if kind == "range" else 1, kind, top=True)
        self.stack.append(_Frame(kind, pipe, pos, mark, chained))

    def _else(self, pos: int) -> None:
        if not self.stack:
            self._fail(pos, "unexpected {{else}}")
        frame = self.stack[-1]
        if frame.orelse is not None:
            self._fail(pos, "expected {{end}}, found a second {{else}}")
        frame.orelse = []
        if (nxt := self._peek()) is not None:
            if nxt.text not in ("if", "with") or frame.kind == "range":
                self._fail(nxt.pos, f"unexpected {nxt.text!r} in else")
            self._open(self._next().text, pos, chained=True)

    def _close(self, pos: int) -> None:
        if not self.stack:
            self._fail(pos, "unexpected {{end}}")
        frame = self.stack.pop()
        node = frame.node()
        while frame.chained:  # one {{end}} closes a whole `else if` chain
            frame = self.stack.pop()
            frame.target().append(node)
            node = frame.node()
        del self.vars[frame.mark :]
        self._emit(node)

    def _pipe(self, pos: int, max_decl: int, what: str, top: bool = False) -> Pipe:
        decl, assign = self._decl(max_decl)
        cmds = [self._command(pos, what)]
        while (tok := self._peek()) is not None and tok.text == "|":
            self._next()
            cmds.append(self._command(tok.pos, what))
            if not isinstance(cmds[-1][0], Func):
                self._fail(tok.pos, f"non executable command in pipeline stage {len(cmds)}")
        if top and (tok := self._peek()) is not None:
            self._fail(tok.pos, f"unexpected {tok.text!r} in {what}")
        for name in decl:
            if assign and name not in self.vars:
                self._fail(pos, f'undefined variable "{name}"')
            self.vars.append(name)
        return Pipe(tuple(cmds), decl, assign)

    def _decl(self, max_decl: int) -> tuple[tuple[str, ...], bool]:
        """`$x :=`, `$x =`, and in range `$i, $x :=`."""
        kinds = [t.text if t.kind == "op" else t.kind for t in self.toks[self.i : self.i + 4]]
        for count in range(max_decl, 0, -1):
            want = ["var", ","] * (count - 1) + ["var"]
            if kinds[: len(want)] == want and kinds[len(want) : len(want) + 1] in ([":="], ["="]):
                names = tuple(t.text for t in (self._next() for _ in want) if t.kind == "var")
                return names, self._next().text == "="
        return (), False

    def _command(self, pos: int, what: str) -> tuple[Arg, ...]:
        args: list[Arg] = []
        while (tok := self._peek()) is not None and tok.text not in ("|", ")"):
            args.append(self._operand())
        if not args:
            self._fail(tok.pos if tok else pos, f"missing value for {what}")
        if len(args) > 1 and not isinstance(args[0], Func):
            self._fail(pos, "can't give argument to non-function")
        return tuple(args)

    def _operand(self) -> Arg:
        tok = self._next()
        if tok.kind in ("field", "dot"):
            return Field(tuple(tok.text[1:].split(".")) if tok.kind == "field" else ())
        if tok.kind == "var":
            if tok.text not in self.vars:
                self._fail(tok.pos, f'undefined variable "{tok.text}"')
            nxt = self._peek()  # `$x.A`: a field right after, with no space
            chained = nxt is not None and nxt.kind == "field" and nxt.pos == tok.end
            return Var(tok.text, tuple(self._next().text[1:].split(".")) if chained else ())
        if tok.kind in ("str", "raw", "num"):
            return Const(self._const(tok))
        if tok.text in ("true", "false", "nil"):
            return Const({"true": True, "false": False, "nil": None}[tok.text])
        if tok.kind == "ident" and tok.text not in _KEYWORDS:
            if tok.text not in _FUNCS:
                self._fail(tok.pos, f'function "{tok.text}" not defined')
            return Func(tok.text)
        if tok.text == "(":
            pipe = self._pipe(tok.pos, 0, "parenthesized pipeline")
            if (close := self._peek()) is None or close.text != ")":
                self._fail(tok.pos, "unclosed left paren")
            self._next()
            return pipe
        self._fail(tok.pos, f"unexpected {tok.text!r} in operand")

    def _const(self, tok: _Tok) -> Any:
        if tok.kind == "raw":
            return tok.text[1:-1]
        if tok.kind == "num":
            return float(tok.text) if re.search("[.eE]", tok.text) else int(tok.text)
        try:
            if _BAD_ESCAPE.search(tok.text):
                raise ValueError
            return ast.literal_eval(tok.text)  # Go's escapes are Python's, near enough
        except (ValueError, SyntaxError):
            self._fail(tok.pos, f"malformed quoted string {tok.text}")


def _collect(nodes: tuple[Node, ...] | tuple[Arg, ...], names: set[str]) -> None:
    for node in nodes:
        if isinstance(node, Action | Block):
            _collect(tuple(a for cmd in node.pipe.cmds for a in cmd), names)
        if isinstance(node, Block):
            _collect(node.body + node.orelse, names)
        elif isinstance(node, Field | Var):
            names.update((node.name, *node.names) if isinstance(node, Var) else node.names)
        elif isinstance(node, Pipe):
            _collect(tuple(a for cmd in node.cmds for a in cmd), names)


def _cut(nodes: tuple[Node, ...], cut: list[bool]) -> tuple[Node, ...]:
    """Keep nodes up to the first `.Response` field in output (not in conditions), as Ollama."""
    out: list[Node] = []
    for node in nodes:
        if cut[0]:
            break
        if isinstance(node, Action):
            pipe = _cut_pipe(node.pipe, cut)
            if pipe is not None:
                out.append(replace(node, pipe=pipe))
        elif isinstance(node, Block):
            body = _cut(node.body, cut)
            out.append(replace(node, body=body, orelse=() if cut[0] else _cut(node.orelse, cut)))
        else:
            out.append(node)
    return tuple(out)


def _cut_pipe(pipe: Pipe, cut: list[bool]) -> Pipe | None:
    cmds: list[tuple[Arg, ...]] = []
    for cmd in pipe.cmds:
        args: list[Arg] = []
        for arg in cmd:
            if cut[0]:
                break
            kept = _cut_pipe(arg, cut) if isinstance(arg, Pipe) else arg
            cut[0] = cut[0] or isinstance(arg, Field) and "Response" in arg.names
            if kept is not None:
                args.append(kept)
        if not args:  # Go drops the whole action when a command lost all its arguments
            return None
        cmds.append(tuple(args))
    return replace(pipe, cmds=tuple(cmds))


# --- execution


class _FuncError(Exception):
    pass


_NO_FINAL = object()  # no value piped in from the previous command


class _Exec:
    def __init__(self, src: str, root: Mapping[str, Any]) -> None:
        self.src, self.root, self.pos = src, root, 0
        self.vars: list[list[Any]] = [["$", root]]
        self.out: list[str] = []

    def run(self, nodes: tuple[Node, ...]) -> str:
        self.walk(nodes, self.root)
        return "".join(self.out)

    def fail(self, message: str) -> NoReturn:
        line = self.src.count("\n", 0, self.pos) + 1
        raise InvalidRequest(f"template: line {line}: {message}")

    def walk(self, nodes: tuple[Node, ...], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, str):
                self.out.append(node)
                continue
            mark, self.pos = len(self.vars), node.pos
            if isinstance(node, Action):
                value = self.pipe(node.pipe, dot)
                self.out.append("" if node.pipe.decl else _show(value))
                continue
            try:  # variables declared in a block's pipeline live until its {{end}}
                value = self.pipe(node.pipe, dot, declare=node.kind != "range")
                if node.kind == "range":
                    self.range(node, value, dot, mark)
                elif _truth(value):
                    self.walk(node.body, value if node.kind == "with" else dot)
                else:
                    self.walk(node.orelse, dot)
            finally:
                del self.vars[mark:]

    def range(self, node: Block, value: Any, dot: Any, mark: int) -> None:
        if isinstance(value, Mapping):
            items = [(k, value[k]) for k in sorted(value)]  # Go ranges over sorted map keys
        elif isinstance(value, list | tuple) or value is None:
            items = list(enumerate(value or ()))
        else:
            self.fail(f"range can't iterate over {_type(value)}")
        if not items:
            self.walk(node.orelse, dot)
        decl = node.pipe.decl
        for key, elem in items:
            del self.vars[mark:]
            self.bind(decl, (key, elem) if len(decl) == 2 else (elem,), node.pipe.assign)
            self.walk(node.body, elem)

    def bind(self, names: tuple[str, ...], values: tuple[Any, ...], assign: bool) -> None:
        for name, value in zip(names, values, strict=False):
            slot = next((v for v in reversed(self.vars) if v[0] == name), None)
            if assign and slot is not None:
                slot[1] = value
            else:
                self.vars.append([name, value])

    def pipe(self, pipe: Pipe, dot: Any, declare: bool = True) -> Any:
        value: Any = _NO_FINAL
        for cmd in pipe.cmds:
            value = self.command(cmd, dot, value)
        if declare and pipe.decl:
            self.bind(pipe.decl, (value,), pipe.assign)
        return value

    def command(self, cmd: tuple[Arg, ...], dot: Any, final: Any) -> Any:
        head = cmd[0]
        if not isinstance(head, Func):
            if final is not _NO_FINAL:
                self.fail("can't give argument to non-function")
            return self.arg(head, dot)
        thunks: list[Callable[[], Any]] = [functools.partial(self.arg, a, dot) for a in cmd[1:]]
        if final is not _NO_FINAL:
            thunks.append(lambda: final)
        if head.name not in ("and", "or"):
            return self.call(head.name, [thunk() for thunk in thunks])
        if not thunks:
            self.fail(f"wrong number of args for {head.name}: want at least 1 got 0")
        for thunk in thunks:  # short-circuit, returning the deciding value, as Go
            value = thunk()
            if _truth(value) != (head.name == "and"):
                break
        return value

    def call(self, name: str, args: list[Any]) -> Any:
        fn, least, most = _FUNCS[name]
        if not least <= len(args) <= most:
            self.fail(f"wrong number of args for {name}: got {len(args)}")
        try:
            return fn(*args)
        except _FuncError as exc:
            self.fail(f"error calling {name}: {exc}")

    def arg(self, arg: Arg, dot: Any) -> Any:
        if isinstance(arg, Const):
            return arg.value
        if isinstance(arg, Func):
            return self.call(arg.name, [])
        if isinstance(arg, Pipe):
            return self.pipe(arg, dot)
        if isinstance(arg, Var):
            dot = next(v for v in reversed(self.vars) if v[0] == arg.name)[1]
        for name in arg.names:
            if dot is None:
                return None
            if not isinstance(dot, Mapping):
                self.fail(f"can't evaluate field {name} in type {_type(dot)}")
            dot = _field(dot, name)
        return dot


def _field(m: Mapping[str, Any], name: str) -> Any:
    if name in m:
        return m[name]
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()  # ToolCallID: tool_call_id
    return m.get(snake, m.get(name.lower()))


def _type(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


def _truth(value: Any) -> bool:
    """Go's truth: false, 0, nil and empty strings, lists and maps are false."""
    if isinstance(value, str | list | tuple | Mapping | bool | int | float) or value is None:
        return bool(value)
    return True


def _kind(value: Any) -> str:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return "number" if number else _type(value)


def _compare(a: Any, b: Any) -> int:
    if _kind(a) != _kind(b) or _kind(a) not in ("number", "str"):
        raise _FuncError(f"incompatible types for comparison: {_type(a)} and {_type(b)}")
    return int(a > b) - int(a < b)


def _eq(a: Any, *others: Any) -> bool:
    if a is None or None in others:  # lenient: a missing value equals only another
        return any(a is b for b in others)
    if any(_kind(b) != _kind(a) or isinstance(b, Mapping | list) for b in (a, *others)):
        raise _FuncError(f"incompatible types for comparison: {_type(a)}")
    return any(a == b for b in others)


def _len(value: Any) -> int:
    if isinstance(value, str | list | tuple | Mapping):
        return len(value.encode() if isinstance(value, str) else value)  # Go counts bytes
    raise _FuncError(f"len of type {_type(value)}")


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, Mapping):
            value = value.get(key)
        elif isinstance(value, list | tuple) and isinstance(key, int) and 0 <= key < len(value):
            value = value[key]
        else:
            raise _FuncError(f"can't index item of type {_type(value)} with {key!r}")
    return value


def _slice(value: Any, *bounds: Any) -> Any:
    if not isinstance(value, str | list | tuple):
        raise _FuncError(f"can't slice item of type {_type(value)}")
    data: Any = value.encode() if isinstance(value, str) else value  # Go slices bytes
    lo, hi = (*bounds, len(data))[:2] if bounds else (0, len(data))
    if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi <= len(data)):
        raise _FuncError(f"index out of range: {lo}:{hi} of {len(data)}")
    return data[lo:hi].decode(errors="replace") if isinstance(value, str) else data[lo:hi]


def _print(*args: Any) -> str:
    """fmt.Sprint: a space between operands when neither is a string."""
    spaced = [
        " " + _show(a)
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str)
        else _show(a)
        for i, a in enumerate(args)
    ]
    return "".join(spaced)


def _go_json(value: Any) -> str:
    """Go's json.Marshal: compact, with <, > and & escaped."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=dict)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Go prints 3.0 as 3
    return _go_json(value) if isinstance(value, Mapping | list | tuple) else str(value)


_FUNCS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "and": (bool, 1, 99),  # evaluated lazily in _Exec.command
    "or": (bool, 1, 99),
    "not": (lambda x: not _truth(x), 1, 1),
    "eq": (_eq, 2, 99),
    "ne": (lambda a, b: not _eq(a, b), 2, 2),
    "lt": (lambda a, b: _compare(a, b) < 0, 2, 2),
    "le": (lambda a, b: _compare(a, b) <= 0, 2, 2),
    "gt": (lambda a, b: _compare(a, b) > 0, 2, 2),
    "ge": (lambda a, b: _compare(a, b) >= 0, 2, 2),
    "len": (_len, 1, 1),
    "index": (_index, 1, 99),
    "slice": (_slice, 1, 3),
    "print": (_print, 0, 99),
    "json": (_go_json, 1, 1),  # Ollama adds this one to Go's builtins
}
