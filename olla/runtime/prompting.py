"""Turning a chat into the prompt text a model expects, with its template and SYSTEM/MESSAGE."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from olla.chat import ThinkSetting
from olla.errors import InvalidRequest
from olla.images import tag_messages
from olla.registry.capabilities import INSERT, TOOLS, Capabilities, capabilities_of
from olla.registry.facts import ModelFacts
from olla.registry.store import ResolvedModel
from olla.templates import NO_THINK, ChatMessage, render_insert, render_prompt


def model_capabilities(
    model: ResolvedModel, facts: ModelFacts, template: str | None = None
) -> Capabilities:
    """What `model` can do with the template that renders its prompts: `template` (a request's
    own) if given, else its Modelfile TEMPLATE, else its file's chat template."""
    chosen = template if template is not None else model.template
    return capabilities_of(chosen, facts, projector=model.projector_path is not None)


def chat_prompt(
    model: ResolvedModel,
    facts: ModelFacts,
    messages: Sequence[ChatMessage],
    system: str | None = None,
    template: str | None = None,
    tools: list[dict[str, Any]] | None = None,
    think: ThinkSetting = NO_THINK,
    after_model_messages: bool = True,
) -> str:
    """The prompt for `messages` after the model's MESSAGEs (unless `after_model_messages` is
    false: `messages` then holds them already), with SYSTEM unless overridden; `tools` are
    offered through the template (InvalidRequest if it has no place for them). Images become
    their tags in their messages' text, numbered in order (olla.images.tag_messages)."""
    source = template if template is not None else model.template
    if tools and TOOLS not in model_capabilities(model, facts, template):
        raise InvalidRequest(
            f"{model.entry.name.display} does not support tools: its template has no place "
            "for them; use a model whose template offers tools (`olla show --template`)"
        )
    return render_prompt(
        template_source=source,
        chat_template=facts.chat_template,
        messages=tag_messages([*model.messages, *messages] if after_model_messages else messages),
        system=system if system is not None else model.system,
        bos_token=facts.bos_token,
        eos_token=facts.eos_token,
        tools=tools or None,
        think=think,
    )


def insert_prompt(
    model: ResolvedModel,
    facts: ModelFacts,
    prompt: str,
    suffix: str,
    system: str | None,
    template: str | None,
) -> str:
    """Fill-in-the-middle: a template with `.Suffix` (Ollama's "insert" capability)."""
    source = template if template is not None else model.template
    if not source or INSERT not in model_capabilities(model, facts, template):
        raise InvalidRequest(
            f'field "suffix": {model.entry.name.display} does not support insert: its template '
            "has no .Suffix (use a code model whose template does)"
        )
    return render_insert(source, prompt, suffix, system if system is not None else model.system)


def model_path(model: ResolvedModel) -> Path:
    """The model's file, for its facts; 400 for a model without one."""
    if model.model_path is None:
        raise InvalidRequest(f"model {model.entry.name.display} has no model file")
    return model.model_path
