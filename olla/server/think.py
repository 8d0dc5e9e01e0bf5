"""A request's `think` against what its model can do, as Ollama decides it (issue 24).

A model that thinks does so unless asked not to; asking a model that cannot is a 400. The
decision reaches the template (`ThinkSetting`: `.Think`, `.ThinkLevel`, `.IsThinkSet`, or
`enable_thinking` and `reasoning_effort`) and the answer (`ReasoningFormat`: how to split the
reasoning from the content; harmony's channels are always split, its reasoning dropped when
the request asked for none).
"""

from __future__ import annotations

from collections.abc import Sequence

from olla.chat import Message, ThinkSetting
from olla.errors import InvalidRequest, NotSupported
from olla.registry.capabilities import THINKING, Capabilities
from olla.stream.reasoning import ReasoningFormat
from olla.templates import ChatMessage, content_of, role_of
from olla.thinking.detect import prompt_opens
from olla.thinking.parser import TagParser


def think_setting(
    asked: bool | str | None, capabilities: Capabilities, model: str, constrained: bool
) -> ThinkSetting:
    """What the template is told. `asked`: the request's `think` (None: not given);
    `constrained`: the request has a `format`, whose grammar leaves no room to reason first."""
    thinks = THINKING in capabilities
    if asked is None:
        if not thinks or constrained:
            return ThinkSetting(False, "", set=thinks)
        asked = True
    if asked and not thinks:
        raise InvalidRequest(f'field "think": {model} does not support thinking')
    if asked and constrained:
        raise NotSupported(
            f'{model} cannot think before a structured answer here ("format" constrains the '
            'answer from its first token): send "think": false, or leave out "format"'
        )
    level = asked if isinstance(asked, str) else ""
    return ThinkSetting(bool(asked), level, set=True)


def reasoning_format(
    capabilities: Capabilities, think: ThinkSetting, prompt: str, constrained: bool
) -> ReasoningFormat | None:
    """How to split the answer to `prompt`; None when it is all content."""
    reasoning = capabilities.reasoning
    if reasoning is None or constrained:
        return None
    if reasoning.harmony:
        # as Ollama: the output starts inside the assistant message the prompt opened
        return ReasoningFormat(harmony=True, inside=True, shown=think.enabled)
    if not think.enabled:
        return None
    inside = prompt_opens(prompt, reasoning.opening, reasoning.closing)
    return ReasoningFormat(reasoning.opening, reasoning.closing, inside=inside)


def earlier_reasoning_dropped(
    messages: Sequence[ChatMessage], capabilities: Capabilities
) -> tuple[ChatMessage, ...]:
    """`messages` with the reasoning a client left in earlier answers' content taken out (what
    came before the last user message), as Ollama does for its thinking models: it saves tokens,
    and the template shows an answer's reasoning itself where it wants it."""
    reasoning = capabilities.reasoning
    if reasoning is None or reasoning.harmony:
        return tuple(messages)
    last_user = max((i for i, m in enumerate(messages) if role_of(m) == "user"), default=-1)
    out: list[ChatMessage] = []
    for i, message in enumerate(messages):
        content = content_of(message)
        if i < last_user and role_of(message) == "assistant" and reasoning.opening in content:
            parser = TagParser(reasoning.opening, reasoning.closing)
            _, answer = parser.feed(content)
            message = _with_content(message, answer + parser.finish()[1])
        out.append(message)
    return tuple(out)


def _with_content(message: ChatMessage, content: str) -> ChatMessage:
    if isinstance(message, Message):
        return Message(message.role, content)
    return {**message, "content": content}
