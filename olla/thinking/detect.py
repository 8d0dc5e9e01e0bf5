"""Whether a model thinks, and how, decided from its template as Ollama decides it.

A Modelfile TEMPLATE (Go) thinks when it writes `.Thinking` inside a range over `.Messages`
(Ollama's `thinking.InferTags`); the tags are the first and last text around it. A GGUF's Jinja
chat template thinks when it writes `<think>` and `</think>`, or splits earlier answers at
`</think>` (Ollama's `chatTemplateHasThinkingSupport`). gpt-oss speaks harmony instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from olla.errors import InvalidRequest
from olla.gotemplate import GoTemplate
from olla.gotemplate.nodes import Arg, Block, Field, Node, Pipe

__all__ = ["go_template_tags", "is_harmony", "jinja_tags", "prompt_opens", "think_levels"]

THINK_TAGS = ("<think>", "</think>")
# gpt-oss's architecture as Ollama's converter writes it, and as llama.cpp's does
GPT_OSS = frozenset({"gptoss", "gpt-oss"})
_HARMONY_TOKENS = ("<|start|>", "<|channel|>", "<|message|>", "<|end|>")
_SPLITS = ("content.split('</think>')", 'content.split("</think>")')
_THINK_LEVEL = re.compile(r"\.ThinkLevel\b")


def go_template_tags(source: str | GoTemplate) -> tuple[str, str] | None:
    """(opening, closing) thinking tags of a Go template, or None when it writes no reasoning.

    Ollama's heuristic: a `.Thinking` whose nearest enclosing range runs over `.Messages`; the
    list of nodes that holds it gives the opening tag (its first node, if text, stripped) and the
    closing one (its last). Every such `.Thinking` in the template is read; the last ones win.
    """
    try:
        template = source if isinstance(source, GoTemplate) else GoTemplate(source)
    except InvalidRequest:
        return None  # a template that does not parse renders nothing, reasoning included
    tags = ["", ""]
    _visit(template.nodes, False, tags)
    return (tags[0], tags[1]) if tags[0] and tags[1] else None


def jinja_tags(chat_template: str) -> tuple[str, str] | None:
    """("<think>", "</think>") when a Jinja chat template writes or strips them, else None."""
    if all(tag in chat_template for tag in THINK_TAGS):
        return THINK_TAGS
    # DeepSeek-R1-0528 and others only cut earlier reasoning off at `</think>`; Ollama counts that,
    # unless the template keeps the reasoning in its own field or is Mistral's (`<SPECIAL_12>`)
    splits = any(split in chat_template for split in _SPLITS)
    if splits and "reasoning_content" not in chat_template and "<SPECIAL_12>" not in chat_template:
        return THINK_TAGS
    return None


def is_harmony(architecture: str, template: str) -> bool:
    """gpt-oss's harmony format: its architecture with a template in harmony (Ollama's test), or
    any template that writes harmony's start, channel, message and end tokens."""
    if architecture in GPT_OSS and "<|start|>" in template and "<|end|>" in template:
        return True
    return all(token in template for token in _HARMONY_TOKENS)


def prompt_opens(prompt: str, opening: str, closing: str) -> bool:
    """Whether the rendered prompt ends inside an opened tag (a template that writes `<think>`
    after the assistant header): the model's continuation is reasoning until the closing tag.

    As Ollama: the prompt, trailing whitespace aside, ends with the opening tag.
    """
    tail = prompt.rstrip()
    return bool(opening) and tail.endswith(opening) and not tail.endswith(closing)


def think_levels(template_source: str | None, chat_template: str | None, harmony: bool) -> bool:
    """Whether the model takes `think` levels ("low", "medium", "high"): harmony's reasoning
    effort, or the template in use (the Go TEMPLATE when there is one, else the Jinja one)
    reading `.ThinkLevel` (Go) or `reasoning_effort` (Jinja)."""
    if harmony:
        return True
    if template_source is not None:
        try:
            return "thinklevel" in GoTemplate(template_source).identifiers
        except InvalidRequest:  # e.g. a function olla lacks: read the text
            return bool(_THINK_LEVEL.search(template_source))
    return chat_template is not None and "reasoning_effort" in chat_template


def _visit(nodes: tuple[Node, ...], in_messages: bool, tags: list[str]) -> None:
    """Walk `nodes` (one list of Go's tree) in Go's order; `in_messages`: the nearest enclosing
    range runs over `.Messages`."""
    for node in nodes:
        if isinstance(node, str):
            continue
        if isinstance(node, Block) and node.kind == "range":
            inner = _uses_messages(node.pipe)  # Go counts a range's own pipe as inside it
        else:
            inner = in_messages
        if inner and any(f.names[0] == "Thinking" for f in _fields(node.pipe) if f.names):
            _take_tags(nodes, tags)
        if isinstance(node, Block):
            _visit(node.body, inner, tags)
            _visit(node.orelse, inner, tags)


def _take_tags(nodes: tuple[Node, ...], tags: list[str]) -> None:
    """The first and last text of the list that holds the `.Thinking`, as Ollama takes them."""
    if isinstance(nodes[0], str):
        tags[0] = nodes[0].strip()
    if isinstance(nodes[-1], str):
        tags[1] = nodes[-1].strip()


def _uses_messages(pipe: Pipe) -> bool:
    return any(f.names[:1] == ("Messages",) for f in _fields(pipe))


def _fields(pipe: Pipe) -> Iterator[Field]:
    """The fields of a pipe, parenthesized pipes included (`$x.F` is a variable: not a field)."""
    for cmd in pipe.cmds:
        for arg in cmd:
            yield from _arg_fields(arg)


def _arg_fields(arg: Arg) -> Iterator[Field]:
    if isinstance(arg, Field):
        yield arg
    elif isinstance(arg, Pipe):
        yield from _fields(arg)
