"""Rendering a parsed Go template against its data, and the template functions."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from olla.errors import InvalidRequest
from olla.gotemplate.nodes import Action, Arg, Block, Const, Func, Node, Pipe, Var


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
