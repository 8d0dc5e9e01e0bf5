"""Templates checked at create: Go syntax for a TEMPLATE, Jinja for a model's own template."""

from __future__ import annotations

import pytest

from olla.errors import InvalidRequest
from olla.registry.template_check import check_chat_template, check_template


@pytest.mark.parametrize(
    "source",
    [
        "",
        "{{ .Prompt }}",
        "{{ if .System }}{{ .System }}{{ end }}{{ range .Messages }}{{ .Content }}{{ end }}",
        '{{- range $i, $m := .Messages }}{{ if eq $m.Role "user" }}{{ $m.Content }}{{ end }}'
        "{{ end }}",
    ],
)
def test_good_templates_pass(source: str) -> None:
    check_template(source)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ if }}", "TEMPLATE does not parse: line 1, column 1: missing value for if"),
        ("ok\n{{ .Prompt ", "TEMPLATE does not parse: line 2, column 1: unclosed action"),
        ("{{ nope .X }}", 'TEMPLATE does not parse: line 1, column 4: function "nope" not defined'),
        ("{{ if .X }}open", "TEMPLATE does not parse: line 1"),
    ],
)
def test_bad_templates_name_the_problem_and_where(source: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_template(source)
    assert str(caught.value).startswith(message) and caught.value.status == 400


def test_a_jinja_template_given_as_template_gets_a_hint() -> None:
    jinja = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(InvalidRequest, match="looks like a Jinja chat template"):
        check_template(jinja)


def test_chat_templates_are_jinja() -> None:
    check_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}", "the GGUF")
    with pytest.raises(InvalidRequest) as caught:
        check_chat_template("{{ x }}\n{% if x %}", "tokenizer_config.json")
    message = str(caught.value)
    assert message.startswith("the model's chat template (tokenizer_config.json) does not parse")
    assert (
        "line 2: Unexpected end of template" in message and "give the model a TEMPLATE" in message
    )
