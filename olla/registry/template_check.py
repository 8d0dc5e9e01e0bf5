"""Templates checked when a model is created, so one that cannot parse is a 400 then, not at use.

A TEMPLATE (from the request or a Modelfile) is Go template syntax, as in Ollama; a model's own
chat template (a GGUF's `tokenizer.chat_template`, a model directory's tokenizer_config.json or
chat_template.jinja) is Jinja. `olla.templates` renders them the same two ways.
"""

from __future__ import annotations

from olla.errors import InvalidRequest
from olla.gotemplate import GoTemplate
from olla.templates import JinjaChatTemplate

_GO_PREFIX = "template: "
_JINJA_PREFIX = "chat template: "


def check_template(source: str) -> None:
    """InvalidRequest naming the line, column and problem if `source` is not a Go template."""
    try:
        GoTemplate(source)
    except InvalidRequest as exc:
        hint = ""
        if "{%" in source:
            hint = (
                "; TEMPLATE takes Go template syntax, as Ollama's does, and this looks like a "
                "Jinja chat template (without a TEMPLATE, the model's own Jinja template is used)"
            )
        raise InvalidRequest(
            f"TEMPLATE does not parse: {exc.message.removeprefix(_GO_PREFIX)}{hint}"
        ) from None


def check_chat_template(source: str, where: str) -> None:
    """InvalidRequest naming the line and problem if the model's Jinja template (found at
    `where`) does not compile; a TEMPLATE in the Modelfile takes its place."""
    try:
        JinjaChatTemplate(source)
    except InvalidRequest as exc:
        raise InvalidRequest(
            f"the model's chat template ({where}) does not parse: "
            f"{exc.message.removeprefix(_JINJA_PREFIX)}; give the model a TEMPLATE "
            "(Go template syntax) to use instead"
        ) from None
