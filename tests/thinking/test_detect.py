"""Thinking detection on hand-written stand-ins for real templates (templates/README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from olla.gotemplate import GoTemplate
from olla.templates import JinjaChatTemplate
from olla.thinking import TagParser
from olla.thinking.detect import (
    go_template_tags,
    is_harmony,
    jinja_tags,
    prompt_opens,
    think_levels,
)

TEMPLATES = Path(__file__).parent / "templates"
THINK = ("<think>", "</think>")


def stand_in(name: str) -> str:
    """The hand-written template `name`: the features its model's has that the tests need."""
    return (TEMPLATES / name).read_text(encoding="utf-8")


# DeepSeek's later revision of the R1 distills' template opens the reasoning in the prompt
DISTILL = stand_in("deepseek-r1-distill-llama-8b.jinja").replace(
    "{{'<｜Assistant｜>'}}{% endif %}", "{{'<｜Assistant｜><think>\\n'}}{% endif %}"
)
# gpt-oss's chat template, the parts that matter here: it reads `reasoning_effort`, writes harmony
GPT_OSS_JINJA = (
    '{%- if reasoning_effort is not defined %}{%- set reasoning_effort = "medium" %}{%- endif %}'
    '{{- "<|start|>system<|message|>Reasoning: " + reasoning_effort + "<|end|>" }}'
    "{%- for message in messages -%}"
    '{{- "<|start|>" + message.role + "<|channel|>final<|message|>" }}'
    '{{- message.content + "<|end|>" }}'
    "{%- endfor -%}{%- if add_generation_prompt -%}<|start|>assistant{%- endif -%}"
)
# a TEMPLATE that opens the reasoning for the model (the SmolLM2 test model)
OPENS_THINK = (
    "{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 -}}\n"
    "<|im_start|>{{ .Role }}\n"
    '{{ if and (eq .Role "assistant") .Thinking }}<think>{{ .Thinking }}</think>{{ end }}'
    "{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n<think>\n"
)
GPT_OSS_DATED = stand_in("gpt-oss.gotmpl").replace("{{ currentDate }}", "2025-08-05")


@pytest.mark.parametrize(
    ("source", "tags"),
    [
        (stand_in("qwen3.gotmpl"), THINK),
        (stand_in("deepseek-r1.gotmpl"), THINK),
        (stand_in("magistral.gotmpl"), THINK),
        (OPENS_THINK, THINK),  # the last `.Thinking` read decides, as in Ollama
        (stand_in("smollm2.gotmpl"), None),
        (stand_in("gpt-oss.gotmpl"), None),  # olla lacks `currentDate`: it does not parse
        (GPT_OSS_DATED, None),  # `$msg.Thinking` is a variable's field, not `.Thinking`
        (
            "{{ range .Messages }}{{ if .Thinking }}[THINK]{{ .Thinking }}[/THINK]{{ end }}"
            "{{ end }}",
            ("[THINK]", "[/THINK]"),
        ),
        (
            "{{ range $i, $m := .Messages }}{{ if .Thinking }}\n  Reasoning:  {{ .Thinking }}"
            "   End of reasoning.\n{{ end }}{{ end }}",
            ("Reasoning:", "End of reasoning."),
        ),
        ("{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}", None),  # not in a range
        (
            "{{ range .Messages }}{{ range .Parts }}<think>{{ .Thinking }}</think>{{ end }}"
            "{{ end }}",
            None,
        ),  # the nearest range is not over .Messages
        ("{{ range $.Messages }}<think>{{ .Thinking }}</think>{{ end }}", None),  # `$.`: as Go
        ("{{ range .Messages }}<think>{{ .Thinking }}{{ end }}", None),  # no closing text
        ("{{ range .Messages }}", None),  # does not parse
    ],
)
def test_go_template_tags(source: str, tags: tuple[str, str] | None) -> None:
    assert go_template_tags(source) == tags


def test_go_template_tags_takes_a_parsed_template() -> None:
    assert go_template_tags(GoTemplate(stand_in("qwen3.gotmpl"))) == THINK


@pytest.mark.parametrize(
    ("chat_template", "tags"),
    [
        (stand_in("qwen3.jinja"), THINK),
        (stand_in("deepseek-r1-0528.jinja"), THINK),  # splits at </think> only
        (stand_in("deepseek-r1-distill-llama-8b.jinja"), THINK),  # likewise
        (DISTILL, THINK),
        (stand_in("smollm2.jinja"), None),
        (GPT_OSS_JINJA, None),
        ("{% set c = message.content.split('</think>')[-1] %}{{ m.reasoning_content }}", None),
        ('{% set c = content.split("</think>")[-1] %}<SPECIAL_12>', None),
        ('{% set c = content.split("</think>")[-1] %}', THINK),
    ],
)
def test_jinja_tags(chat_template: str, tags: tuple[str, str] | None) -> None:
    assert jinja_tags(chat_template) == tags


@pytest.mark.parametrize(
    ("architecture", "template", "harmony"),
    [
        ("gptoss", stand_in("gpt-oss.gotmpl"), True),  # Ollama's converter's name
        ("gpt-oss", stand_in("gpt-oss.gotmpl"), True),  # llama.cpp's
        ("gpt-oss", GPT_OSS_JINJA, True),
        ("gpt-oss", "<|start|><|end|>Reasoning: {{ .ThinkLevel }} {{ .Prompt }}", True),
        ("llama", stand_in("gpt-oss.gotmpl"), True),  # writes harmony's tokens
        ("gpt-oss", "{{ .Prompt }}", False),  # a TEMPLATE not in harmony: Ollama does not parse it
        ("qwen3", stand_in("qwen3.jinja"), False),
        ("llama", stand_in("smollm2.jinja"), False),
    ],
)
def test_is_harmony(architecture: str, template: str, harmony: bool) -> None:
    assert is_harmony(architecture, template) is harmony


HI = [{"role": "user", "content": "hi"}]
GO_HI = [{"Role": "user", "Content": "hi"}]


def jinja_prompt(source: str, **variables: Any) -> str:
    return JinjaChatTemplate(source, "<bos>", "<eos>").render(HI, **variables)


def go_prompt(source: str, think: bool | None) -> str:
    data = {"Messages": GO_HI, "Think": bool(think), "IsThinkSet": think is not None}
    return GoTemplate(source).render(data)


@pytest.mark.parametrize(
    ("prompt", "opens"),
    [
        (jinja_prompt(DISTILL), True),  # ends `<｜Assistant｜><think>\n`
        (jinja_prompt(stand_in("deepseek-r1-distill-llama-8b.jinja")), False),
        (jinja_prompt(stand_in("deepseek-r1-0528.jinja")), False),
        (jinja_prompt(stand_in("qwen3.jinja")), False),  # the model writes <think> itself
        (jinja_prompt(stand_in("qwen3.jinja"), enable_thinking=False), False),  # opened and closed
        (go_prompt(stand_in("qwen3.gotmpl"), True), False),
        (go_prompt(stand_in("qwen3.gotmpl"), False), False),  # `<think>\n\n</think>\n\n`
        (go_prompt(stand_in("deepseek-r1.gotmpl"), None), False),
        (go_prompt(OPENS_THINK, True), True),
        ("...<think>  \n", True),
        ("no tags", False),
    ],
)
def test_prompt_opens(prompt: str, opens: bool) -> None:
    assert prompt_opens(prompt, *THINK) is opens


def test_prompt_opens_needs_an_opening_tag() -> None:
    assert not prompt_opens("anything", "", "</think>")
    assert not prompt_opens("a think>", "think>", "a think>")  # the closer ends the same way


@pytest.mark.parametrize(
    ("template_source", "chat_template", "harmony", "levels"),
    [
        (None, None, True, True),  # harmony's reasoning effort
        (GPT_OSS_DATED, None, False, True),  # reads .ThinkLevel
        (stand_in("gpt-oss.gotmpl"), None, False, True),  # does not parse here: its text is read
        (stand_in("qwen3.gotmpl"), None, False, False),  # .Think only: true or false
        (None, GPT_OSS_JINJA, False, True),  # reads reasoning_effort
        (None, stand_in("qwen3.jinja"), False, False),
        (stand_in("qwen3.gotmpl"), GPT_OSS_JINJA, False, False),  # the TEMPLATE is the one in use
        (None, None, False, False),
    ],
)
def test_think_levels(
    template_source: str | None, chat_template: str | None, harmony: bool, levels: bool
) -> None:
    assert think_levels(template_source, chat_template, harmony) is levels


def test_a_template_that_opens_the_reasoning_end_to_end() -> None:
    """The issue's case: tags from the TEMPLATE, the prompt opens them, the model's continuation
    is reasoning until the closing tag."""
    tags = go_template_tags(OPENS_THINK)
    assert tags == THINK
    parser = TagParser(*tags, inside=prompt_opens(go_prompt(OPENS_THINK, True), *tags))
    pieces = [parser.feed(token) for token in ["The user", " greets.", "</thi", "nk>\n\n", "Hi!"]]
    assert [*pieces, parser.finish()] == [
        ("The user", ""),
        (" greets.", ""),
        ("", ""),
        ("", ""),
        ("", "Hi!"),
        ("", ""),
    ]
