"""Go `text/template`, the subset Ollama Modelfile TEMPLATEs use: parse once, render many times.

On purpose unlike Go: a missing key renders as "" (Ollama's data never shows `<no value>`), maps
and lists print as JSON (as Ollama's api types do), and `.ToolCalls` also finds `tool_calls`.

`nodes` holds the syntax tree, `parse` turns source into it, `execute` renders it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from olla.gotemplate.execute import _Exec
from olla.gotemplate.nodes import Action, Field, Node, Pipe
from olla.gotemplate.parse import _collect, _cut, _Parser

__all__ = ["GoTemplate"]


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
