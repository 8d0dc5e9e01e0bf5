"""Prompt templates: GGUF chat templates (Jinja2, sandboxed) and Modelfile TEMPLATEs (Go syntax).

`render_prompt` turns a conversation into the text a model continues: the Modelfile's TEMPLATE
rendered the way Ollama does (`render_ollama`), else the GGUF's `tokenizer.chat_template` rendered
the way Hugging Face transformers does, else `FALLBACK_TEMPLATE`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from olla.chat import Message, ThinkSetting
from olla.errors import InvalidRequest
from olla.gotemplate import GoTemplate

__all__ = [
    "FALLBACK_TEMPLATE",
    "GoTemplate",
    "JinjaChatTemplate",
    "render_ollama",
    "render_prompt",
]

# For models with neither a TEMPLATE nor a chat template: "{system}\n\n{user}\n{assistant}\n"...
# so a base model sees plain text; written as a legacy Go template, so a trailing assistant
# message is continued like with any other template.
FALLBACK_TEMPLATE = (
    "{{ if .System }}{{ .System }}\n\n{{ end }}{{ if .Prompt }}{{ .Prompt }}\n{{ end }}"
    "{{ .Response }}{{ if .Response }}\n{{ end }}"
)

ChatMessage = Message | Mapping[str, Any]
NO_THINK = ThinkSetting()  # a template's `.Think` when the request and the model ask none

# What a template can raise while rendering; anything else is a bug in olla, not in the template.
_RUNTIME_ERRORS = (
    jinja2.TemplateError,
    TypeError,
    ValueError,
    LookupError,
    AttributeError,
    ArithmeticError,
    RecursionError,
)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox, but an unsafe attribute fails at once instead of rendering as ""."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        kind = type(obj).__name__
        raise SecurityError(f"access to attribute {attribute!r} of {kind!r} object is unsafe")


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """transformers' `tojson`: Jinja's own escapes HTML characters and non-ASCII text."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise InvalidRequest(f"chat template: {message}")


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _template_line(exc: BaseException) -> int | None:
    """The template line an error was raised on: Jinja names its frames `<template>`."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class JinjaChatTemplate:
    """A GGUF `tokenizer.chat_template`, compiled once in a sandbox, as transformers runs it."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "") -> None:
        env = _Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        self.bos_token, self.eos_token = bos_token, eos_token
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise InvalidRequest(f"chat template: line {exc.lineno}: {exc.message}") from None

    def render(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> str:
        context = {
            **extra,
            "messages": messages,
            "tools": tools,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "add_generation_prompt": add_generation_prompt,
        }
        try:
            return self._template.render(context)
        except InvalidRequest:
            raise  # raise_exception: the template's own message
        except _RUNTIME_ERRORS as exc:
            line = _template_line(exc)
            where = f"line {line}: " if line else ""
            raise InvalidRequest(f"chat template: {where}{exc}") from None


def role_of(message: ChatMessage) -> str:
    """A message's role, from a `Message` or a mapping (`role` or Go's `Role`)."""
    if isinstance(message, Message):
        return message.role
    return str(message.get("role", message.get("Role")) or "")


def content_of(message: ChatMessage) -> str:
    """A message's text content, from a `Message` or a mapping."""
    if isinstance(message, Message):
        return message.content
    return str(message.get("content", message.get("Content")) or "")


def _with_system(messages: Sequence[ChatMessage], system: str | None) -> list[ChatMessage]:
    """The model's SYSTEM goes first unless the conversation starts with its own (Ollama)."""
    if system and (not messages or role_of(messages[0]) != "system"):
        return [Message("system", system), *messages]
    return list(messages)


def _collate(messages: Sequence[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """Ollama's `collate`: Go-style message maps, runs of one role (but tool) merged by a blank
    line; also every system message's content, joined the same way."""
    system: list[str] = []
    collated: list[dict[str, Any]] = []
    for message in messages:
        role, content = role_of(message), content_of(message)
        if role == "system":
            system.append(content)
        if collated and collated[-1]["Role"] == role and role != "tool":
            collated[-1]["Content"] += "\n\n" + content
            continue
        extra = {} if isinstance(message, Message) else dict(message)
        for key in ("role", "content"):  # other fields stay: `.ToolCalls` finds tool_calls
            extra.pop(key, None)
        collated.append({**extra, "Role": role, "Content": content})
    return "\n\n".join(system), collated


def render_ollama(
    template: GoTemplate,
    messages: Sequence[ChatMessage],
    system: str | None = None,
    tools: list[Any] | None = None,
    think: ThinkSetting = NO_THINK,
) -> str:
    """Ollama's `Template.Execute` for a chat; `system` is the model's SYSTEM."""
    system_text, collated = _collate(_with_system(messages, system))
    if "messages" in template.identifiers:
        data: dict[str, Any] = {"System": system_text, "Messages": collated, "Tools": tools}
        data.update(Response="", Think=think.enabled, ThinkLevel=think.level, IsThinkSet=think.set)
        return template.render(data)
    return _render_legacy(template, collated)


def _render_legacy(template: GoTemplate, messages: list[dict[str, Any]]) -> str:
    """A `.System`/`.Prompt`/`.Response` template, rendered once per turn, as Ollama does."""
    if "response" not in template.identifiers:  # Ollama's Parse appends one
        template = template.appending_response()
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}
    for message in messages:
        role, content = message["Role"], message["Content"]
        # A system message after a prompt, or a user message after a response, starts a turn.
        if (role == "system" and (turn["Prompt"] or turn["Response"])) or (
            role == "user" and turn["Response"]
        ):
            out.append(template.render(turn))
            turn = {"System": "", "Prompt": "", "Response": ""}
        key = {"system": "System", "user": "Prompt", "assistant": "Response"}.get(role)
        if key:  # tool messages have no place in a legacy template
            turn[key] = content
    # The last turn stops where its response goes: the model writes it (or continues a prefill).
    out.append(template.cut_after_response().render(turn))
    return "".join(out)


@functools.lru_cache(maxsize=32)
def _go_template(source: str) -> GoTemplate:
    return GoTemplate(source)


@functools.lru_cache(maxsize=32)
def _jinja_template(source: str, bos_token: str, eos_token: str) -> JinjaChatTemplate:
    return JinjaChatTemplate(source, bos_token, eos_token)


def _render_jinja(
    template: JinjaChatTemplate,
    messages: list[ChatMessage],
    tools: list[Any] | None,
    think: ThinkSetting = NO_THINK,
) -> str:
    """A trailing assistant message is a prefill: the output stops at the end of its text
    (transformers' `continue_final_message`). Thinking is asked as llama.cpp's server asks it
    (`enable_thinking`, and `reasoning_effort` for a level); an earlier answer's reasoning is
    each message's `reasoning_content` too, where Qwen's and DeepSeek's templates read it."""
    chat = [_jinja_message(m) for m in messages]
    if chat and chat[-1].get("role") == "assistant" and not content_of(chat[-1]):
        chat.pop()  # an empty prefill is no prefill
    prefill = content_of(chat[-1]).strip() if chat and chat[-1].get("role") == "assistant" else ""
    kwargs: dict[str, Any] = {"enable_thinking": think.enabled} if think.set else {}
    if think.level:
        kwargs["reasoning_effort"] = think.level
    text = template.render(chat, add_generation_prompt=not prefill, tools=tools, **kwargs)
    at = text.rfind(prefill) if prefill else -1
    return text[: at + len(prefill)] if at >= 0 else text


def _jinja_message(message: ChatMessage) -> dict[str, Any]:
    if isinstance(message, Message):
        return {"role": message.role, "content": message.content}
    out = dict(message)
    if out.get("thinking") and "reasoning_content" not in out:
        out["reasoning_content"] = out["thinking"]
    return out


def render_insert(source: str, prompt: str, suffix: str, system: str | None) -> str:
    """A fill-in-the-middle prompt from a Go template with `.Prompt` and `.Suffix`."""
    data = {"System": system or "", "Prompt": prompt, "Suffix": suffix, "Response": ""}
    return _go_template(source).render(data)


def render_prompt(
    template_source: str | None,
    chat_template: str | None,
    messages: Sequence[ChatMessage],
    system: str | None,
    bos_token: str,
    eos_token: str,
    tools: list[Any] | None = None,
    think: ThinkSetting = NO_THINK,
) -> str:
    """The prompt for a chat: the Modelfile TEMPLATE (Go syntax) if non-empty, else the GGUF
    chat template (Jinja), else FALLBACK_TEMPLATE; `system` is the model's SYSTEM."""
    if template_source:
        return render_ollama(_go_template(template_source), messages, system, tools, think)
    if chat_template:
        template = _jinja_template(chat_template, bos_token, eos_token)
        return _render_jinja(template, _with_system(messages, system), tools, think)
    return render_ollama(_go_template(FALLBACK_TEMPLATE), messages, system)
