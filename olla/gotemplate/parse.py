"""Go template source to a syntax tree; the identifiers it uses; the cut after `.Response`."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, NoReturn

from olla.errors import InvalidRequest
from olla.gotemplate.execute import _FUNCS
from olla.gotemplate.nodes import Action, Arg, Block, Const, Field, Func, Node, Pipe, Var


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
