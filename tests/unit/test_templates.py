"""Prompt templates: GGUF Jinja chat templates, Modelfile Go templates, Ollama's rendering rules."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from olla.chat import Message, ThinkSetting
from olla.errors import InvalidRequest
from olla.registry.gguf_info import read_gguf_info
from olla.templates import (
    FALLBACK_TEMPLATE,
    GoTemplate,
    JinjaChatTemplate,
    render_ollama,
    render_prompt,
)

SYS = Message("system", "You are a helpful assistant.")
CHAT = [
    Message("user", "Hello, how are you?"),
    Message("assistant", "I'm doing great. How can I help you today?"),
    Message("user", "I'd like to show off how chat templating works!"),
]


def _dicts(messages: list[Message]) -> list[dict[str, Any]]:
    return [{"role": m.role, "content": m.content} for m in messages]


# --- GGUF chat templates (Jinja)


@pytest.fixture(scope="module")
def smollm2_template(smollm2_gguf: Path) -> str:
    template = read_gguf_info(smollm2_gguf).chat_template
    assert template is not None
    return template


SMOL_CHATML = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nHello, how are you?<|im_end|>\n"
    "<|im_start|>assistant\nI'm doing great. How can I help you today?<|im_end|>\n"
    "<|im_start|>user\nI'd like to show off how chat templating works!<|im_end|>\n"
)


@pytest.mark.parametrize(
    ("add_generation_prompt", "tail"), [(True, "<|im_start|>assistant\n"), (False, "")]
)
def test_smollm2_chat_template(
    smollm2_template: str, add_generation_prompt: bool, tail: str
) -> None:
    template = JinjaChatTemplate(smollm2_template, "<|im_start|>", "<|im_end|>")
    out = template.render(_dicts([SYS, *CHAT]), add_generation_prompt=add_generation_prompt)
    assert out == SMOL_CHATML + tail


def test_smollm2_default_system_and_prompt_choice(smollm2_template: str) -> None:
    # No system anywhere: the template's own default system prompt.
    out = render_prompt(None, smollm2_template, CHAT[:1], None, "<|im_start|>", "<|im_end|>")
    assert out == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nHello, how are you?<|im_end|>\n<|im_start|>assistant\n"
    )
    # The model's SYSTEM becomes the system message...
    out = render_prompt("", smollm2_template, CHAT, SYS.content, "", "")
    assert out == SMOL_CHATML + "<|im_start|>assistant\n"
    # ...unless the conversation brings its own.
    own = Message("system", "Be terse.")
    out = render_prompt(None, smollm2_template, [own, *CHAT], SYS.content, "", "")
    assert out.startswith("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\n")
    assert SYS.content not in out


def test_jinja_trailing_assistant_is_a_prefill(smollm2_template: str) -> None:
    messages = [SYS, *CHAT, Message("assistant", "Sure! Templates ")]
    out = render_prompt(None, smollm2_template, messages, None, "", "")
    assert out == SMOL_CHATML + "<|im_start|>assistant\nSure! Templates"
    # An empty trailing assistant message is no prefill.
    out = render_prompt(
        None, smollm2_template, [SYS, *CHAT, Message("assistant", "")], None, "", ""
    )
    assert out == SMOL_CHATML + "<|im_start|>assistant\n"


def test_jinja_tokens_tools_extra_and_environment() -> None:
    source = (
        "{{ bos_token }}{% for m in messages %}\n"
        "  {% if loop.index > 2 %}{% break %}{% endif %}\n"
        "{{ m.role }}={{ m['content'] }}|\n"
        "{% endfor %}\n"
        "{{ tools | length }} {{ flavour }} {{ eos_token }}"
    )
    template = JinjaChatTemplate(source, "<s>", "</s>")
    messages = [{"role": "user", "content": str(i)} for i in range(5)]
    out = template.render(messages, tools=[{"type": "function"}], flavour="mint")
    assert out == "<s>user=0|\nuser=1|\n1 mint </s>"
    year = JinjaChatTemplate("{{ strftime_now('%Y') }}").render([])
    assert year == str(datetime.now().year)


def test_jinja_tojson_keeps_non_ascii() -> None:
    template = JinjaChatTemplate("{{ messages[0] | tojson }}|{{ 'é' | tojson(indent=2) }}")
    out = template.render([{"role": "user", "content": "héllo 日本 <b>"}])
    assert out == '{"role": "user", "content": "héllo 日本 <b>"}|"é"'


def test_jinja_raise_exception_message() -> None:
    source = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Roles must alternate') }}"
    template = JinjaChatTemplate(source + "{% endif %}")
    with pytest.raises(InvalidRequest, match="Roles must alternate"):
        template.render([{"role": "assistant", "content": "hi"}])
    assert template.render([{"role": "user", "content": "hi"}]) == ""


def test_jinja_syntax_error_names_line() -> None:
    with pytest.raises(InvalidRequest, match=r"line 3: unexpected '}'"):
        JinjaChatTemplate("a\n{% for m in messages %}\n{{ m }")
    with pytest.raises(InvalidRequest, match=r"line 2: .*endfor"):
        JinjaChatTemplate("a\n{% for m in messages %}x")


def test_jinja_runtime_error_names_line() -> None:
    template = JinjaChatTemplate("ok\n{{ messages[0]['content'] + 1 }}")
    with pytest.raises(InvalidRequest, match=r"line 2: can only concatenate str"):
        template.render([{"role": "user", "content": "x"}])


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ messages.__class__.__base__.__subclasses__() }}",
        "{{ raise_exception.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ messages.append(1) }}",
        "{% set x = messages.pop() %}",
    ],
)
def test_jinja_sandbox_escapes_fail(source: str) -> None:
    with pytest.raises(InvalidRequest, match="unsafe|not safely callable"):
        JinjaChatTemplate(source).render([{"role": "user", "content": "x"}])


# --- Go templates


def go(source: str, **data: Any) -> str:
    return GoTemplate(source).render(data)


MESSAGES = [{"Role": "user", "Content": "hi"}, {"Role": "assistant", "Content": "yo"}]


@pytest.mark.parametrize(
    ("source", "data", "expected"),
    [
        ("plain text", {}, "plain text"),
        ("{{ .Prompt }}!", {"Prompt": "hi"}, "hi!"),
        ("{{ .A.B.C }}", {"A": {"B": {"C": "deep"}}}, "deep"),
        ("[{{ .Missing }}{{ .A.Missing.X }}]", {"A": {}}, "[]"),
        ("{{ . }}", {}, "{}"),
        (
            "{{ .N }} {{ .F }} {{ .T }} {{ .L }}",
            {"N": 3, "F": 2.0, "T": True, "L": [1]},
            "3 2 true [1]",
        ),
        (
            '{{ "str\\ting" }} {{ `raw\\n` }} {{ 42 }} {{ -1.5 }} {{ true }}',
            {},
            "str\ting raw\\n 42 -1.5 true",
        ),
        ("{{/* a comment */}}x{{- /* trimmed */ -}}  y", {}, "xy"),
        ("{{ if .A }}a{{ end }}", {"A": "x"}, "a"),
        ("{{ if .A }}a{{ else }}b{{ end }}", {"A": ""}, "b"),
        ("{{ if .A }}a{{ else if .B }}b{{ else if .C }}c{{ else }}d{{ end }}", {"C": 1}, "c"),
        ("{{ if .A }}a{{ else if .B }}b{{ else }}d{{ end }}", {}, "d"),
        ("{{ if .A }}t{{ else }}f{{ end }}", {"A": []}, "f"),
        ("{{ if .A }}t{{ else }}f{{ end }}", {"A": {}}, "f"),
        ("{{ if .A }}t{{ else }}f{{ end }}", {"A": 0}, "f"),
        ("{{ if .A }}t{{ else }}f{{ end }}", {"A": False}, "f"),
        ("{{ if .A }}t{{ else }}f{{ end }}", {"A": None}, "f"),
        ("{{ if .A }}t{{ else }}f{{ end }}", {"A": [0]}, "t"),
        ("{{ if not .A }}t{{ end }}", {"A": ""}, "t"),
        ("{{ if and .A .B }}t{{ else }}f{{ end }}", {"A": 1, "B": ""}, "f"),
        ("{{ if or .A .B }}t{{ else }}f{{ end }}", {"A": 0, "B": "x"}, "t"),
        ("{{ and .A .B }}|{{ or .A .B }}", {"A": "a", "B": "b"}, "b|a"),
        ("{{ and .A .Missing.X }}|{{ or .B .Missing.X }}", {"A": 0, "B": "b"}, "0|b"),
        ('{{ if eq .Role "user" }}u{{ end }}', {"Role": "user"}, "u"),
        ('{{ if eq .Role "a" "b" "user" }}any{{ end }}', {"Role": "user"}, "any"),
        ('{{ if ne .Role "user" }}x{{ else }}same{{ end }}', {"Role": "user"}, "same"),
        ("{{ if eq .Missing .Other }}nil==nil{{ end }}", {}, "nil==nil"),
        ('{{ lt 1 2 }} {{ ge 2.5 3 }} {{ gt "b" "a" }}', {}, "true false true"),
        ("{{ if and (eq .A 1) (not .B) }}ok{{ end }}", {"A": 1, "B": False}, "ok"),
        (
            "{{ range .Messages }}{{ .Role }}:{{ .Content }};{{ end }}",
            {"Messages": MESSAGES},
            "user:hi;assistant:yo;",
        ),
        (
            "{{ range .Messages }}{{ $.Name }}/{{ .Role }} {{ end }}",
            {"Messages": MESSAGES, "Name": "n"},
            "n/user n/assistant ",
        ),
        (
            "{{ range $i, $m := .Messages }}{{ $i }}{{ $m.Role }}{{ .Content }} {{ end }}",
            {"Messages": MESSAGES},
            "0userhi 1assistantyo ",
        ),
        ("{{ range $m := .Messages }}{{ $m.Content }}{{ end }}", {"Messages": MESSAGES}, "hiyo"),
        ("{{ range .Messages }}x{{ else }}empty{{ end }}", {"Messages": []}, "empty"),
        ("{{ range .Messages }}x{{ else }}empty{{ end }}", {}, "empty"),
        ("{{ range .M }}{{ . }}{{ end }}", {"M": {"b": 2, "a": 1}}, "12"),
        (
            "{{ range .Outer }}{{ range .Inner }}{{ . }}{{ end }},{{ end }}",
            {"Outer": [{"Inner": [1, 2]}, {"Inner": [3]}]},
            "12,3,",
        ),
        ("{{ with .A }}{{ .B }}{{ else }}none{{ end }}", {"A": {"B": "b"}}, "b"),
        ("{{ with .A }}{{ .B }}{{ else }}none{{ end }}", {}, "none"),
        ("{{ $x := .A }}{{ if $x }}{{ $x }}{{ end }}", {"A": "v"}, "v"),
        ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", {}, "2"),
        (
            "{{ len .Messages }} {{ len .S }} {{ len .M }}",
            {"Messages": MESSAGES, "S": "é", "M": {"a": 1}},
            "2 2 1",
        ),
        (
            "{{ range slice .L 1 }}{{ . }}{{ end }}|{{ slice .S 1 3 }}",
            {"L": [1, 2, 3], "S": "abcd"},
            "23|bc",
        ),
        (
            "{{ range $i, $_ := .L }}{{ if eq (len (slice $.L $i)) 1 }}last={{ . }}{{ end }}"
            "{{ end }}",
            {"L": ["a", "b"]},
            "last=b",
        ),
        ('{{ index .L 1 }} {{ index .M "k" }}', {"L": ["a", "b"], "M": {"k": "v"}}, "b v"),
        ("{{ .A | print }}", {"A": "x"}, "x"),
        ('{{ print 1 2 "a" }}|{{ json .M }}', {"M": {"a": "<é>"}}, '1 2a|{"a":"\\u003cé\\u003e"}'),
        (
            "{{ .Function }}",
            {"Function": {"name": "f", "arguments": {"x": 1}}},
            '{"name":"f","arguments":{"x":1}}',
        ),
        (
            "{{ range .ToolCalls }}{{ .Function.Name }}{{ end }}",
            {"tool_calls": [{"function": {"name": "get"}}]},
            "get",
        ),
    ],
)
def test_go_constructs(source: str, data: dict[str, Any], expected: str) -> None:
    assert GoTemplate(source).render(data) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a  \n {{- .X }}", "aX"),
        ("{{ .X -}} \n\t b", "Xb"),
        ("a \n {{- .X -}} \n b", "aXb"),
        ("a {{- if .X -}} \n yes \n {{- end -}} \n b", "ayesb"),
        ("a {{-3}} b", "a -3 b"),  # no space after the dash: a negative number, not trimming
        ("{{- range .L }}\n  {{ . }}\n{{- end }}\n", "\n  1\n  2\n"),
        ("x\n{{- /* c */}}\ny", "x\ny"),
    ],
)
def test_go_trimming(source: str, expected: str) -> None:
    assert go(source, X="X", L=[1, 2]) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("ok\n{{ .Prompt", r"line 2, column 1: unclosed action"),
        ("{{ end }}", r"line 1, column 1: unexpected \{\{end\}\}"),
        ("{{ else }}", r"unexpected \{\{else\}\}"),
        ("x\n  {{ if .A }}a", r"line 2, column 3: missing \{\{end\}\} for \{\{if\}\}"),
        ("{{ range .A }}{{ if .B }}{{ end }}", r"missing \{\{end\}\} for \{\{range\}\}"),
        ("{{ if .A }}{{ else }}{{ else }}{{ end }}", r"found a second \{\{else\}\}"),
        ("{{ range .A }}{{ else if .B }}{{ end }}", r"unexpected 'if' in else"),
        ("{{ foo .A }}", r'function "foo" not defined'),
        ('{{ template "x" }}', r"\{\{template\}\} is not supported"),
        ('{{ define "x" }}{{ end }}', r"\{\{define\}\} is not supported"),
        ('{{ "abc }}', r"column 4: unterminated quoted string"),
        ("{{ $x }}", r'undefined variable "\$x"'),
        ("{{ if $x := .A }}{{ end }}{{ $x }}", r'undefined variable "\$x"'),
        ("{{/* open }}", r"unclosed comment"),
        ("{{/* c */ x }}", r"comment ends before closing delimiter"),
        ("{{ if }}{{ end }}", r"missing value for if"),
        ("{{ }}", r"missing value for command"),
        ("{{ (.A }}", r"unclosed left paren"),
        ("{{ .A ) }}", r"unexpected '\)' in command"),
        ("{{ .A .B }}", r"can't give argument to non-function"),
        ("{{ .A | .B }}", r"non executable command in pipeline stage 2"),
        ("{{ .A | }}", r"missing value for command"),
        ("{{ end .A }}", r"unexpected '.A' in end"),
        ("{{ .A # }}", r"unexpected '#'"),
        ('{{ "\\q" }}', r"malformed quoted string"),
    ],
)
def test_go_malformed(source: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=r"^template: line \d+, column \d+: ") as exc:
        GoTemplate(source)
    assert re.search(message, str(exc.value)), str(exc.value)


@pytest.mark.parametrize(
    ("source", "data", "message"),
    [
        ('{{ eq .A "1" }}', {"A": 1}, "incompatible types for comparison"),
        ("{{ lt .A 1 }}", {"A": [1]}, "incompatible types for comparison"),
        ("{{ len .A }}", {"A": 3}, "len of type int"),
        ("{{ slice .A 2 1 }}", {"A": [1, 2]}, "index out of range"),
        ("{{ index .A 5 }}", {"A": [1, 2]}, "can't index"),
        ("x\n{{ range .A }}{{ end }}", {"A": "str"}, "line 2: range can't iterate over str"),
        ("{{ .A.B }}", {"A": "str"}, "can't evaluate field B in type str"),
        ("{{ not 1 2 }}", {}, "wrong number of args for not"),
    ],
)
def test_go_runtime_errors(source: str, data: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        GoTemplate(source).render(data)


def test_go_identifiers_like_ollama_vars() -> None:
    assert GoTemplate("{{ .System }} {{ .Prompt }}").identifiers == {"system", "prompt"}
    source = (
        '{{ range $i, $m := .Messages }}{{ if eq .Role "tool" }}{{ $.Tools }}{{ end }}{{ end }}'
    )
    assert GoTemplate(source).identifiers == {"messages", "role", "$", "tools"}  # not decls
    assert "messages" in GoTemplate("{{ len (slice $.Messages 1) }}").identifiers


def test_go_cut_after_response() -> None:
    source = "{{ .A }}{{ if .C }}{{ .Response }}tail{{ else }}e{{ end }}after{{ .Response }}"
    cut = GoTemplate(source).cut_after_response()
    assert cut.render({"A": "a", "C": 1, "Response": "R"}) == "aR"
    # The condition naming .Response does not cut; only the output does.
    assert GoTemplate("{{ if .Response }}x{{ end }}y").cut_after_response().render({}) == "y"


# --- Ollama's rules (template/template.go Execute and collate)

CHATML_LEGACY = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n{{ .Response }}<|im_end|>"
)

LLAMA3_MESSAGES = """{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>

{{ .Content }}{{ if not $last }}<|eot_id|>{{ end }}
{{- end }}
{{- end }}"""

MISTRAL_LEGACY = "[INST] {{ if .System }}{{ .System }} {{ end }}{{ .Prompt }} [/INST]"


def test_chatml_legacy_multi_turn() -> None:
    out = render_ollama(GoTemplate(CHATML_LEGACY), [SYS, *CHAT])
    assert out == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello, how are you?<|im_end|>\n"
        "<|im_start|>assistant\nI'm doing great. How can I help you today?<|im_end|>"
        "<|im_start|>user\nI'd like to show off how chat templating works!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_llama3_messages_multi_turn() -> None:
    out = render_ollama(GoTemplate(LLAMA3_MESSAGES), CHAT, system=SYS.content)
    assert out == (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello, how are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
        "I'm doing great. How can I help you today?<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
        "I'd like to show off how chat templating works!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    prefill = render_ollama(GoTemplate(LLAMA3_MESSAGES), [*CHAT, Message("assistant", "Sure")])
    assert prefill.endswith("works!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nSure")


def test_mistral_legacy_multi_turn() -> None:
    out = render_ollama(GoTemplate(MISTRAL_LEGACY), [SYS, *CHAT])
    assert out == (
        "[INST] You are a helpful assistant. Hello, how are you? [/INST]"
        "I'm doing great. How can I help you today?"
        "[INST] I'd like to show off how chat templating works! [/INST]"
    )


def test_legacy_system_messages_start_turns() -> None:
    messages = [
        Message("system", "S1"),
        Message("user", "U1"),
        Message("assistant", "A1"),
        Message("system", "S2"),
        Message("user", "U2"),
        Message("user", "U3"),  # consecutive messages of one role are merged
    ]
    out = render_ollama(GoTemplate(MISTRAL_LEGACY), messages)
    assert out == "[INST] S1 U1 [/INST]A1[INST] S2 U2\n\nU3 [/INST]"
    # A system message after an unanswered prompt closes that turn.
    pending = [Message("user", "U1"), Message("system", "S2"), Message("user", "U2")]
    out = render_ollama(GoTemplate(MISTRAL_LEGACY), pending)
    assert out == "[INST] U1 [/INST][INST] S2 U2 [/INST]"


def test_legacy_trailing_assistant_is_prefill() -> None:
    messages = [*CHAT, Message("assistant", "My name is")]
    out = render_ollama(GoTemplate(CHATML_LEGACY), messages)
    assert out.endswith("works!<|im_end|>\n<|im_start|>assistant\nMy name is")
    out = render_ollama(GoTemplate(MISTRAL_LEGACY), messages)
    assert out.endswith("[INST] I'd like to show off how chat templating works! [/INST]My name is")


def test_messages_template_data() -> None:
    source = (
        "{{ .System }}|{{ range .Messages }}{{ .Role }}={{ .Content }}"
        "{{ range .ToolCalls }}({{ .Function.Name }}){{ end }};{{ end }}"
        "|{{ .Tools }}|{{ .Response }}"
    )
    messages = [
        {"role": "system", "content": "one"},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "two"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get"}}]},
        {"role": "tool", "content": "r1"},
        {"role": "tool", "content": "r2"},
    ]
    tools = [{"type": "function", "function": {"name": "get"}}]
    out = render_ollama(GoTemplate(source), messages, system="model system", tools=tools)
    assert out == (
        "one\n\ntwo|system=one;user=hi;system=two;assistant=(get);tool=r1;tool=r2;"
        '|[{"type":"function","function":{"name":"get"}}]|'
    )


def test_render_ollama_applies_model_system() -> None:
    template = GoTemplate("{{ .System }}|{{ range .Messages }}{{ .Role }};{{ end }}")
    assert render_ollama(template, CHAT[:1], system="S") == "S|system;user;"
    assert render_ollama(template, [SYS, *CHAT[:1]], system="S") == f"{SYS.content}|system;user;"


def test_render_prompt_picks_source() -> None:
    jinja = "{% for m in messages %}{{ m.role }}:{{ m.content }} {% endfor %}"
    # A Modelfile TEMPLATE wins over the GGUF's chat template.
    assert render_prompt(MISTRAL_LEGACY, jinja, CHAT[:1], "S", "", "") == (
        "[INST] S Hello, how are you? [/INST]"
    )
    assert render_prompt(None, jinja, CHAT[:1], "S", "", "") == "system:S user:Hello, how are you? "
    # Neither: the plain fallback.
    out = render_prompt(None, None, CHAT, "S", "", "")
    assert out == (
        "S\n\nHello, how are you?\nI'm doing great. How can I help you today?\n"
        "I'd like to show off how chat templating works!\n"
    )
    assert render_prompt(None, "", CHAT[:1], None, "", "") == "Hello, how are you?\n"
    assert "{{ .System }}" in FALLBACK_TEMPLATE


def test_render_prompt_reports_bad_templates() -> None:
    with pytest.raises(InvalidRequest, match="unclosed action"):
        render_prompt("{{ .Prompt", None, CHAT, None, "", "")
    with pytest.raises(InvalidRequest, match="chat template: line 1"):
        render_prompt(None, "{% if %}", CHAT, None, "", "")


THINKING_GO = (
    "{{ range .Messages }}[{{ .Role }}]{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
    "{{ .Content }}{{ if .ToolCallID }}({{ .ToolCallID }}){{ end }}{{ end }}"
    "[assistant]{{ if .Think }}<think>{{ .ThinkLevel }}{{ end }}{{ if not .IsThinkSet }}?{{ end }}"
)


def test_a_go_template_reads_think_its_level_and_earlier_reasoning() -> None:
    messages = [
        Message("user", "hi"),
        {"role": "assistant", "content": "hello", "thinking": "be kind"},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ]
    on = ThinkSetting(True, "high", set=True)
    rendered = render_prompt(THINKING_GO, None, messages, None, "", "", think=on)
    assert (
        rendered
        == "[user]hi[assistant]<think>be kind</think>hello[tool]42(call_1)[assistant]<think>high"
    )
    assert render_prompt(THINKING_GO, None, messages[:1], None, "", "").endswith("[assistant]?")


def test_a_jinja_template_is_asked_as_llama_cpp_asks_and_sees_reasoning_content() -> None:
    source = (
        "{% for m in messages %}{{ m.role }}:{{ m.reasoning_content or '' }}|{{ m.content }};"
        "{% endfor %}{{ enable_thinking | default('unset') }}/{{ reasoning_effort | default('-') }}"
    )
    messages = [
        Message("user", "hi"),
        {"role": "assistant", "content": "yo", "thinking": "t"},
        Message("user", "and?"),
    ]
    off = ThinkSetting(False, "", set=True)
    assert render_prompt(None, source, messages, None, "", "", think=off).endswith("False/-")
    low = ThinkSetting(True, "low", set=True)
    rendered = render_prompt(None, source, messages, None, "", "", think=low)
    assert rendered == "user:|hi;assistant:t|yo;user:|and?;True/low"
    assert render_prompt(None, source, messages, None, "", "").endswith("unset/-")
