"""How `olla run` prints an answer and its reasoning, and what it asks the daemon for: the
printer fed scripted stream lines, the chat request built from a session, `--think`'s parsing.
No daemon: tests/cli/test_run_thinking.py drives the same code against a real one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from olla.address import HostAddress
from olla.answer import BOLD, CLOSING, GREY, OPENING, RESET, Answer, AnswerPrinter, print_answer
from olla.cli import run_cmd
from olla.client import Client
from olla.repl import Session, chat_request

# a reasoning model's stream: reasoning in pieces, one line that carries both, then the answer
STREAM = [{"thinking": "Two and"}, {"thinking": " two."}, {"thinking": "", "content": "It is"}]
STREAM += [{"content": " four."}]
BOTH = [{"thinking": "Hm."}, {"thinking": " Yes.", "content": "Yes"}, {"content": "!"}]


def printed(messages: list[dict[str, str]], styled: bool, hide: bool = False) -> tuple[str, Answer]:
    out: list[str] = []
    printer = AnswerPrinter(out.append, styled=styled, hide_thinking=hide)
    for message in messages:
        printer.add(message)
    printer.finish("\n")
    return "".join(out), printer.answer


def test_plain_output_marks_the_reasoning_with_text_only() -> None:
    text, answer = printed(STREAM, styled=False)
    assert text == "Thinking...\nTwo and two.\n...done thinking.\n\nIt is four.\n"
    assert answer == Answer(content="It is four.", thinking="Two and two.")


def test_a_terminal_gets_the_reasoning_dimmed_and_its_markers_bold() -> None:
    text, _ = printed(STREAM, styled=True)
    opening, closing = GREY + BOLD + OPENING + RESET + GREY, GREY + BOLD + CLOSING + RESET
    assert text == opening + "Two and two." + "\n" + closing + "It is four.\n"


def test_a_line_with_reasoning_and_answer_prints_the_reasoning_first() -> None:
    text, answer = printed(BOTH, styled=False)
    assert text == OPENING + "Hm. Yes.\n" + CLOSING + "Yes!\n"
    assert answer == Answer(content="Yes!", thinking="Hm. Yes.")


def test_reasoning_that_ends_its_line_gets_no_second_newline() -> None:
    text, _ = printed([{"thinking": "Done.\n"}, {"content": "Ok"}], styled=False)
    assert text == OPENING + "Done.\n" + CLOSING + "Ok\n"


@pytest.mark.parametrize("styled", [False, True])
def test_hidden_reasoning_is_kept_but_not_printed(styled: bool) -> None:
    text, answer = printed(STREAM, styled=styled, hide=True)
    assert text == "It is four.\n"
    assert answer.thinking == "Two and two."


def test_an_answer_without_reasoning_prints_no_markers() -> None:
    assert printed([{"content": "Hi"}, {"content": "."}], styled=True)[0] == "Hi.\n"


def test_an_answer_that_ends_in_its_reasoning_restores_the_colour() -> None:
    text, answer = printed([{"thinking": "Still"}], styled=True)
    assert text == GREY + BOLD + OPENING + RESET + GREY + "Still" + RESET + "\n"
    assert answer == Answer(content="", thinking="Still")
    assert printed([{"thinking": "Still"}], styled=False)[0] == OPENING + "Still\n"


async def test_a_cut_stream_restores_the_colour_and_ends_the_line() -> None:
    async def lines() -> AsyncIterator[dict[str, Any]]:
        yield {"message": {"thinking": "Half a tho"}}
        raise ConnectionResetError

    out: list[str] = []
    with pytest.raises(ConnectionResetError):
        await print_answer(lines(), AnswerPrinter(out.append, True, False), end="\n\n")
    assert "".join(out).endswith("Half a tho" + RESET + "\n")


def test_the_assistant_message_carries_the_reasoning_only_when_there_is_some() -> None:
    assert Answer("Four.", "Two and two.").message() == {
        "role": "assistant",
        "content": "Four.",
        "thinking": "Two and two.",
    }
    assert Answer("Four.").message() == {"role": "assistant", "content": "Four."}


def test_the_chat_request_sends_think_as_set_and_earlier_reasoning_back() -> None:
    s = Session(Client(HostAddress()), "thinker")
    question = {"role": "user", "content": "And 3 + 3?"}
    assert "think" not in chat_request(s, question)  # the model's way: it thinks if it can
    s.history = [{"role": "user", "content": "2 + 2?"}, Answer("4.", "Two and two.").message()]
    for think in (True, False, "high"):
        s.opts.think = think
        body = chat_request(s, question)
        assert body["think"] == think
        assert body["messages"] == [*s.history, question]
        assert body["messages"][1]["thinking"] == "Two and two."


@pytest.mark.parametrize(
    ("args", "think", "prompt"),
    [
        (["--think", "Why?"], "true", ("Why?",)),  # a bare --think never takes the next word
        (["Why?", "--think"], "true", ("Why?",)),
        (["--think=false", "Why?"], "false", ("Why?",)),
        (["--think=HIGH", "Why", "not?"], "high", ("Why", "not?")),
        (["--", "--think"], None, ("--think",)),
        (["Why?"], None, ("Why?",)),
    ],
)
def test_think_takes_a_value_only_after_an_equals_sign(
    args: list[str], think: str | None, prompt: tuple[str, ...]
) -> None:
    params = run_cmd.make_context("run", ["thinker", *args]).params
    assert (params["think"], params["prompt"]) == (think, prompt)
