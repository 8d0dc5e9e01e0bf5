"""TEMPORARY stand-in until the thinking-parsers branch lands (replaced by it)."""

from __future__ import annotations


def go_template_tags(source: str) -> tuple[str, str] | None:
    if ".Thinking" in source and "<think>" in source and "</think>" in source:
        return "<think>", "</think>"
    return None


def jinja_tags(chat_template: str) -> tuple[str, str] | None:
    if "<think>" in chat_template and "</think>" in chat_template:
        return "<think>", "</think>"
    return None


def is_harmony(architecture: str, template: str) -> bool:
    return architecture.replace("-", "") == "gptoss" or "<|channel|>" in template


def prompt_opens(prompt: str, opening: str, closing: str) -> bool:
    at = prompt.rfind(opening)
    return at >= 0 and prompt.find(closing, at) < 0


def think_levels(template_source: str | None, chat_template: str | None, harmony: bool) -> bool:
    return (
        harmony
        or ".ThinkLevel" in (template_source or "")
        or "reasoning_effort" in (chat_template or "")
    )
