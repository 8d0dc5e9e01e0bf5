"""Dropping a chat's oldest messages until its prompt fits (olla.server.truncation)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

import pytest

from olla.images import Image, images_in, tag_messages, with_images
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


IMAGE_TOKENS = 50  # what the fake runner counts for each image's tag


def render_tagged(messages: Sequence[ChatMessage]) -> str:
    """Each message as `<role> content`: a role is one token, and a tag 50 (ImageCounter)."""
    return " ".join(f"<{m['role']}> {m['content']}" for m in tag_messages(messages))  # type: ignore[index]


class ImageCounter(Counter):
    """Counts words, and each `[img-i]` tag as an image's tokens (as the runner's Count)."""

    async def __call__(self, text: str) -> int:
        self.calls += 1
        tags = len(re.findall(r"\[img-\d+\]", text))
        return len(re.sub(r"\[img-\d+\]", " ", text).split()) + tags * IMAGE_TOKENS


def pictured(text: str, *names: str) -> ChatMessage:
    return with_images({"role": "user", "content": text}, [Image(n, n) for n in names])


def fit_tagged(messages: list[ChatMessage], limit: int) -> tuple[str, int, tuple[ChatMessage, ...]]:
    fitted = asyncio.run(fit_chat(messages, render_tagged, ImageCounter(), limit))
    return fitted.prompt, fitted.dropped, fitted.kept


def test_images_count_even_when_the_bytes_fit() -> None:
    messages = [*chat(2, words=2), pictured("what is it?", "a", "b")]
    assert len(render_tagged(messages)) < 112  # its bytes fit; its 121 tokens do not
    prompt, dropped, kept = fit_tagged(messages, limit=112)
    assert dropped == 4 and prompt == "<system> be brief <user> [img-0][img-1]what is it?"
    assert images_in(kept) == (Image("a", "a"), Image("b", "b"))


def test_dropped_messages_take_their_images_and_the_rest_are_numbered_from_zero() -> None:
    messages = [*chat(1, 20), pictured("old", "old"), *chat(3, 20)[1:], pictured("new", "new")]
    messages.append({"role": "assistant", "content": "w"})
    prompt, dropped, kept = fit_tagged(messages, limit=80)
    assert dropped == 9  # all but the system message and the last turn, the old image with them
    assert prompt == "<system> be brief <user> [img-0]new <assistant> w"
    assert images_in(kept) == (Image("new", "new"),)


def test_the_latest_image_stays_though_later_turns_would_allow_a_deeper_cut() -> None:
    messages = [*chat(2), pictured("look", "photo"), *chat(6)[1:]]
    prompt, dropped, kept = fit_tagged(messages, limit=120)
    assert dropped == 4  # the cut stops at the image's message: the rest is over the limit
    assert prompt.startswith("<system> be brief <user> [img-0]look <user> q0")
    assert images_in(kept) == (Image("photo", "photo"),)
    # without the image, the same chat is cut deeper
    plain = [m if not images_in([m]) else {"role": "user", "content": "look"} for m in messages]
    _, deeper, _ = fit_tagged(plain, limit=120)
    assert deeper > dropped
