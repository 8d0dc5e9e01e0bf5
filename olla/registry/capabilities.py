"""What a model can be asked to do, as Ollama reports it (`capabilities` in /api/show and
/api/tags), and how it marks its reasoning, decided as Ollama decides it.

From the model file: an embedding model (its GGUF names a pooling) embeds instead of completing.
From the template that renders its prompts (a Modelfile TEMPLATE, which is a Go template, else
the model's own Jinja chat template): `tools`, `insert` (a Go template's `.Suffix`) and
`thinking` (the think tags around a message's `.Thinking`, or a Jinja template that writes them).
From its family: gpt-oss speaks harmony, whose channels carry reasoning and tool calls.
From its layers: a vision projector reads images (`vision`).
"""

from __future__ import annotations

from dataclasses import dataclass

from olla.errors import InvalidRequest
from olla.gotemplate import GoTemplate
from olla.registry.facts import ModelFacts
from olla.thinking import detect

COMPLETION, EMBEDDING, TOOLS, INSERT, THINKING, VISION = (
    "completion",
    "embedding",
    "tools",
    "insert",
    "thinking",
    "vision",
)
THINK_LEVELS = ("low", "medium", "high")


@dataclass(frozen=True)
class Reasoning:
    """How a model marks its reasoning: between two tags, or in harmony's analysis channel."""

    opening: str = ""
    closing: str = ""
    harmony: bool = False
    levels: bool = False  # it takes "low" | "medium" | "high" (gpt-oss's reasoning effort)


@dataclass(frozen=True)
class Capabilities:
    """Ollama's capability names, in its order, and the reasoning format when it thinks."""

    names: tuple[str, ...]
    reasoning: Reasoning | None = None

    def __contains__(self, name: object) -> bool:
        return name in self.names


def capabilities_of(
    template: str | None, facts: ModelFacts, projector: bool = False
) -> Capabilities:
    """The capabilities of a model whose prompts `template` renders (a Modelfile TEMPLATE; None:
    the model's Jinja chat template does), whose file says `facts`, and which has a vision
    `projector` or not (then `vision`, right after completion, as Ollama orders them)."""
    names = [EMBEDDING if facts.embedding else COMPLETION]
    if projector:
        names.append(VISION)
    jinja = facts.chat_template if template is None else None
    if template is not None:
        names += _go_template_names(template)
    elif jinja:
        if "tools" in jinja or "tool_call" in jinja:  # as Ollama judges a Jinja template
            names.append(TOOLS)
    reasoning = _reasoning(template, jinja, facts.architecture)
    if reasoning is not None:
        if reasoning.harmony and TOOLS not in names:
            names.append(TOOLS)  # harmony carries calls on its commentary channel
        names.append(THINKING)
    return Capabilities(tuple(names), reasoning)


def _go_template_names(source: str) -> list[str]:
    try:
        names = GoTemplate(source).identifiers
    except InvalidRequest:  # one stored before create checked templates: it cannot render
        names = frozenset()
    return [n for n, used in ((TOOLS, "tools" in names), (INSERT, "suffix" in names)) if used]


def _reasoning(template: str | None, jinja: str | None, architecture: str) -> Reasoning | None:
    source = template if template is not None else (jinja or "")
    if detect.is_harmony(architecture, source):
        return Reasoning(harmony=True, levels=True)
    tags = detect.go_template_tags(template) if template is not None else None
    if template is None and jinja:
        tags = detect.jinja_tags(jinja)
    if tags is None:
        return None
    levels = detect.think_levels(template, jinja, False)
    return Reasoning(tags[0], tags[1], levels=levels)
