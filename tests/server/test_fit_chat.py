"""Dropping a chat's oldest messages until its prompt fits (olla.server.truncation)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from olla.server.truncation import fit_chat, prompt_limit
from olla.templates import ChatMessage


def render(messages: Sequence[ChatMessage]) -> str:
    return "".join(f"<{m['role']}>{m['content']}" for m in messages)  # type: ignore[index]


class Counter:
    """Counts a prompt's tokens as its words; remembers how often it was asked."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, text: str) -> int:
        self.calls += 1
        return len(text.split())


def chat(turns: int, words: int = 10) -> list[dict[str, str]]:
    body = " ".join(["w"] * words)
    out = [{"role": "system", "content": "be brief"}]
    for i in range(turns):
        out += [{"role": "user", "content": f"q{i} {body}"}, {"role": "assistant", "content": body}]
    return out


def fit(messages: list[dict[str, str]], limit: int) -> tuple[str, int, Counter]:
    counter = Counter()
    fitted = asyncio.run(fit_chat(messages, render, counter, limit))
    return fitted.prompt, fitted.dropped, counter


def test_a_chat_that_fits_is_not_counted_when_its_bytes_fit() -> None:
    prompt, dropped, counter = fit(chat(2), limit=10_000)
    assert (dropped, counter.calls) == (0, 0)
    assert prompt == render(chat(2))


def test_the_oldest_turns_go_first_and_the_system_message_stays() -> None:
    messages = chat(30) + [{"role": "user", "content": "last question"}]
    prompt, dropped, _ = fit(messages, limit=100)
    assert len(prompt.split()) <= 100
    assert prompt.startswith("<system>be brief<user>")
    assert prompt.endswith("<user>last question")
    kept = len(messages) - dropped
    assert render([messages[0], *messages[len(messages) - kept + 1 :]]) == prompt
    # one turn more would not fit: as much history as fits is kept
    one_more = render([messages[0], *messages[len(messages) - kept - 1 :]])
    assert len(one_more.split()) > 100


def test_the_cut_comes_before_a_user_message() -> None:
    messages = chat(10)
    prompt, dropped, _ = fit(messages, limit=60)
    assert dropped > 0 and dropped % 2 == 0  # whole turns: a user question and its answer
    assert prompt.startswith("<system>be brief<user>q")


def test_the_latest_user_message_stays_even_when_it_does_not_fit() -> None:
    messages = [*chat(3), {"role": "user", "content": " ".join(["x"] * 500)}]
    messages.append({"role": "tool", "content": "result"})
    prompt, dropped, _ = fit(messages, limit=50)
    assert dropped == 6  # three turns; the question and the tool's result after it stay
    assert prompt.endswith("<tool>result")


def test_the_search_counts_a_few_times_not_once_per_message() -> None:
    messages = chat(200) + [{"role": "user", "content": "last"}]
    _, dropped, counter = fit(messages, limit=300)
    assert dropped > 300
    assert counter.calls <= 12  # 1 for the whole chat, log2(201) + 1 for the search


@pytest.mark.parametrize(
    ("num_ctx", "num_predict", "limit"),
    [(4096, None, 3072), (4096, -1, 3072), (4096, 100, 3996), (4096, 10_000, 2048), (512, 0, 384)],
)
def test_room_is_left_to_answer(num_ctx: int, num_predict: int | None, limit: int) -> None:
    assert prompt_limit(num_ctx, num_predict) == limit
