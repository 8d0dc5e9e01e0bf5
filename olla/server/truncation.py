"""A chat too long for the context loses its oldest messages, as Ollama's `truncate` does.

Ollama drops messages from the front until the rendered prompt fits `num_ctx`, keeping every
system message and the last message. olla does the same with two differences it can state:
- It leaves room to answer: the prompt must fit `num_ctx` less `num_predict` (when set), at most
  half the context, else a quarter of it. A history that fills the whole context would make
  the answer shift the context (drop half of it) after its first few tokens.
- It cuts only before a user message (and never past the latest one), so what remains starts a
  turn as every template expects: Jinja templates that check roles alternate refuse a history
  that starts with an assistant's answer or a tool's result.
- It never cuts past the last message that holds an image: the latest image stays (Ollama
  counts 768 tokens an image and may drop them all). The runner's `Count` counts each image's
  tag as the image's tokens, so images weigh what they cost; dropped messages take their images
  with them, and the tags of the rest are numbered anew from 0 (`kept` says which remain).
Fewer messages never render to more tokens, so the cut is found by binary search: a few
renders and one count each (the runner tokenizes; `Count`), not one per message.
A prompt whose bytes fit needs no count (unless it has images): a token stands for at least one
byte, and the one added token (BOS) is within the margin.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from olla.images import images_of
from olla.templates import ChatMessage, role_of

Render = Callable[[Sequence[ChatMessage]], str]
Count = Callable[[str], Awaitable[int]]

ROOM_SHARE = 4  # without num_predict, a quarter of the context is kept free for the answer


@dataclass(frozen=True)
class Fitted:
    """The prompt to send, and how many of the chat's messages it leaves out."""

    prompt: str
    dropped: int = 0
    kept: tuple[ChatMessage, ...] = ()  # the messages rendered, when some were dropped


def prompt_limit(num_ctx: int, num_predict: int | None) -> int:
    """The most tokens a chat's prompt may take in a context of `num_ctx`."""
    wanted = num_predict if num_predict is not None and num_predict > 0 else num_ctx // ROOM_SHARE
    return max(1, num_ctx - min(wanted, num_ctx // 2))


async def fit_chat(
    messages: Sequence[ChatMessage],
    render: Render,
    count: Count,
    limit: int,
    whole: str | None = None,
) -> Fitted:
    """The prompt for `messages`, without its oldest messages where it is over `limit` tokens.

    System messages stay wherever they were; the latest user message (or the last message, in
    a chat without one) and the last message with an image always stay, so a prompt may still
    be over the limit: the runner then keeps its start and end (`truncate` at the token level,
    which keeps an image whole or drops it whole) or refuses it. `whole`: all of `messages`
    rendered, where the caller has it already.
    """
    whole = render(messages) if whole is None else whole
    # an image's tag is a few bytes for hundreds of tokens: only a prompt without one may pass
    # on its bytes
    small = len(whole.encode()) < limit and not any(images_of(m) for m in messages)
    if small or await count(whole) <= limit:
        return Fitted(whole)
    cuts = _cut_points(messages)
    if not cuts:
        return Fitted(whole)
    low, high = 0, len(cuts) - 1  # cuts[high] is kept whatever it costs
    best = high
    while low <= high:
        middle = (low + high) // 2
        if await count(render(_from(messages, cuts[middle]))) <= limit:
            best, high = middle, middle - 1
        else:
            low = middle + 1
    kept = _from(messages, cuts[best])
    return Fitted(render(kept), len(messages) - len(kept), tuple(kept))


def _cut_points(messages: Sequence[ChatMessage]) -> list[int]:
    """Where the kept part may start, oldest first: before each user message but the first;
    before any message but the first in a chat without user messages; never past the last
    message that holds an image."""
    users = [i for i, m in enumerate(messages) if role_of(m) == "user"]
    cuts = [i for i in users if i > 0] if users else list(range(1, len(messages)))
    pictured = [i for i, m in enumerate(messages) if images_of(m)]
    return [i for i in cuts if i <= pictured[-1]] if pictured else cuts


def _from(messages: Sequence[ChatMessage], start: int) -> list[ChatMessage]:
    """The messages from `start` on, after the system messages before it."""
    return [m for m in messages[:start] if role_of(m) == "system"] + list(messages[start:])
