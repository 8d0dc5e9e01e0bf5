"""Capabilities as Ollama reports them, from the model file and the template that renders it."""

from __future__ import annotations

from olla.registry.capabilities import Reasoning, capabilities_of
from olla.registry.facts import ModelFacts

# Ollama's qwen3 template, shortened: the reasoning of earlier turns between think tags
QWEN3_GO = (
    "{{- range $i, $_ := .Messages }}"
    '{{- if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
    '{{- else if eq .Role "assistant" }}<|im_start|>assistant\n'
    "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<|im_end|>\n"
    "{{ end }}{{ end }}<|im_start|>assistant\n"
    "{{ if .Tools }}{{ range .Tools }}{{ . }}{{ end }}{{ end }}"
)
CODE_GO = "<fim_prefix>{{ .Prompt }}<fim_suffix>{{ .Suffix }}<fim_middle>"
QWEN3_JINJA = (
    "{%- for message in messages %}{{ message.content }}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{%- endif %}{%- endif %}{%- if tools %}{{ tools }}{%- endif %}"
)
PLAIN_JINJA = "{% for m in messages %}{{ m.content }}{% endfor %}"
HARMONY_JINJA = (
    "{% for m in messages %}<|start|>{{ m.role }}<|channel|>final<|message|>{{ m.content }}"
    "<|end|>{% endfor %}<|start|>assistant"
)


def test_a_chat_model_completes_and_its_template_says_the_rest() -> None:
    plain = ModelFacts(architecture="llama", chat_template=PLAIN_JINJA)
    assert capabilities_of(None, plain).names == ("completion",)
    qwen = ModelFacts(architecture="qwen3", chat_template=QWEN3_JINJA)
    caps = capabilities_of(None, qwen)
    assert caps.names == ("completion", "tools", "thinking")
    assert caps.reasoning == Reasoning("<think>", "</think>")


def test_a_modelfile_template_decides_over_the_files_own() -> None:
    qwen = ModelFacts(architecture="qwen3", chat_template=QWEN3_JINJA)
    assert capabilities_of(CODE_GO, qwen).names == ("completion", "insert")
    caps = capabilities_of(QWEN3_GO, ModelFacts(chat_template=PLAIN_JINJA))
    assert caps.names == ("completion", "tools", "thinking")
    assert caps.reasoning is not None and (caps.reasoning.opening, caps.reasoning.closing) == (
        "<think>",
        "</think>",
    )


def test_an_embedding_model_embeds_and_gpt_oss_thinks_in_harmony() -> None:
    embedder = ModelFacts(architecture="bert", embedding=True)
    assert capabilities_of(None, embedder).names == ("embedding",)
    gpt_oss = capabilities_of(None, ModelFacts(architecture="gpt-oss", chat_template=HARMONY_JINJA))
    assert gpt_oss.names == ("completion", "tools", "thinking")
    assert gpt_oss.reasoning == Reasoning(harmony=True, levels=True)
