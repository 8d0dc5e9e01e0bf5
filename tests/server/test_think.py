"""A request's `think` against its model's capabilities: what the template is told, how the
answer is split."""

from __future__ import annotations

import pytest

from olla.chat import Message, ThinkSetting
from olla.errors import InvalidRequest, NotSupported
from olla.registry.capabilities import Capabilities, Reasoning
from olla.server.think import earlier_reasoning_dropped, reasoning_format, think_setting
from olla.stream.reasoning import ReasoningFormat

TAGS = Capabilities(("completion", "thinking"), Reasoning("<think>", "</think>"))
HARMONY = Capabilities(("completion", "tools", "thinking"), Reasoning(harmony=True, levels=True))
PLAIN = Capabilities(("completion",))


@pytest.mark.parametrize(
    ("asked", "capabilities", "constrained", "setting"),
    [
        (None, TAGS, False, ThinkSetting(True, "", set=True)),  # on by default
        (False, TAGS, False, ThinkSetting(False, "", set=True)),
        ("high", HARMONY, False, ThinkSetting(True, "high", set=True)),
        (None, PLAIN, False, ThinkSetting(False, "", set=False)),  # nothing said: IsThinkSet false
        (False, PLAIN, False, ThinkSetting(False, "", set=True)),
        (None, TAGS, True, ThinkSetting(False, "", set=True)),  # a format: the default is off
    ],
)
def test_what_the_template_is_told(
    asked: bool | str | None, capabilities: Capabilities, constrained: bool, setting: ThinkSetting
) -> None:
    assert think_setting(asked, capabilities, "m:latest", constrained) == setting


def test_asking_a_model_that_cannot_think_or_thinking_before_a_format_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="m:latest does not support thinking"):
        think_setting("low", PLAIN, "m:latest", False)
    with pytest.raises(NotSupported, match='send "think": false'):
        think_setting(True, TAGS, "m:latest", True)


def test_how_the_answer_is_split() -> None:
    on, off = ThinkSetting(True, set=True), ThinkSetting(False, set=True)
    opened = "<|im_start|>assistant\n<think>\n"
    assert reasoning_format(TAGS, on, opened, False) == ReasoningFormat(
        "<think>", "</think>", inside=True
    )
    assert reasoning_format(TAGS, on, "<|im_start|>assistant\n", False) == ReasoningFormat(
        "<think>", "</think>"
    )
    assert reasoning_format(TAGS, off, opened, False) is None  # not asked: all content
    assert reasoning_format(TAGS, on, opened, True) is None  # a format: all content
    # harmony always carries its reasoning apart: dropped when not asked for
    assert reasoning_format(HARMONY, off, "", False) == ReasoningFormat(
        harmony=True, inside=True, shown=False
    )
    assert reasoning_format(PLAIN, on, opened, False) is None


def test_reasoning_left_in_earlier_answers_is_taken_out_before_the_last_question() -> None:
    messages = (
        Message("user", "a?"),
        {"role": "assistant", "content": "<think>long</think>\n\nA.", "tool_calls": []},
        Message("user", "b?"),
        Message("assistant", "<think>kept</think>B"),  # after the last question: a prefill
    )
    cleaned = earlier_reasoning_dropped(messages, TAGS)
    assert cleaned[1] == {"role": "assistant", "content": "A.", "tool_calls": []}
    assert cleaned[3] == messages[3] and cleaned[0] == messages[0]
    assert earlier_reasoning_dropped(messages, PLAIN) == messages
