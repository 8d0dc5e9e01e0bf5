"""Request intake: a prompt past the context is cut at the token level as Ollama cuts it, and the
sequence is told whether it may shift."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from olla.backends.fake import FakeBackend
from olla.engine.images import ImageSpan
from olla.errors import InvalidRequest
from olla.runner import intake
from olla.wire.messages import Submit

CTX = 64


def generation(prompt: str, can_shift: bool = True, **submit: Any) -> intake.Generation:
    host = FakeBackend(can_shift=can_shift)
    options = submit.pop("options", {})
    return intake.generation(Submit(prompt, options, **submit), None, host, CTX)  # type: ignore[arg-type]


def ids(text: str) -> list[int]:
    return FakeBackend().tokenize(text, add_special=True)


@pytest.mark.parametrize(
    ("num_ctx", "keep", "limit"),
    [(8, 3, 6), (4096, 4, 2050), (4096, 5, 2051), (8, 7, 7), (8, 0, 4), (64, 4, 34)],
)
def test_a_prompt_too_long_keeps_its_head_and_its_latest_tokens(
    num_ctx: int, keep: int, limit: int
) -> None:
    # Ollama's contextShiftPromptLimit table (llm/llama_server_test.go)
    prompt = list(range(3 * num_ctx))
    cut, _ = intake.truncate(prompt, num_ctx, keep)
    assert len(cut) == limit
    assert cut == [*prompt[:keep], *prompt[len(prompt) - (limit - keep) :]]


def test_truncate_on_cuts_and_logs_truncate_off_or_no_shift_is_a_400(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = "".join(chr(97 + i % 26) for i in range(100))
    with caplog.at_level(logging.WARNING, "olla.runner.intake"):
        cut = generation(text).sequence
    assert cut.prompt_ids == [*ids(text)[:4], *ids(text)[-30:]]  # 64 - (64 - 4) // 2 = 34
    assert "truncating the prompt from 100 to 34 tokens (context 64, keep 4)" in caplog.text
    at_context = "x" * CTX  # exactly num_ctx tokens: no room for an answer, cut too
    assert len(generation(at_context).sequence.prompt_ids) == 34
    with pytest.raises(InvalidRequest, match="the prompt is 100 tokens, more than the context"):
        generation(text, truncate=False)
    with pytest.raises(InvalidRequest, match="the prompt is 100 tokens"):
        generation(text, can_shift=False)
    assert len(generation(text, options={"num_keep": 10}).sequence.prompt_ids) == 37


def test_shift_lifts_the_context_cap_on_the_budget() -> None:
    short = "hello"
    shifting = generation(short, options={"num_predict": 400}).sequence
    assert (shifting.shift, shifting.max_tokens, shifting.num_keep) == (True, 400, 4)
    # open-ended, or past 10 contexts, it stops at 10 contexts, as Ollama's boundedNumPredict
    assert generation(short).sequence.max_tokens == 10 * CTX  # num_predict -1
    assert generation(short, options={"num_predict": 5000}).sequence.max_tokens == 10 * CTX
    for capped in (generation(short, shift=False), generation(short, can_shift=False)):
        assert not capped.sequence.shift and capped.sequence.max_tokens == CTX - 5
    fixed = generation(short, shift=False, options={"num_predict": 400})
    assert fixed.sequence.max_tokens == CTX - 5


@pytest.mark.parametrize(("asked", "keep"), [(None, 4), (0, 0), (-1, 20), (500, CTX - 1)])
def test_num_keep_defaults_to_4_means_the_prompt_when_negative_and_stays_in_the_context(
    asked: int | None, keep: int
) -> None:
    assert intake.keep_count(asked, 20, CTX) == keep


def _span(start: int, count: int) -> ImageSpan:
    return ImageSpan(start, count, count, bytes(16), np.zeros((count, 2), np.float32))


def test_truncation_keeps_images_whole_and_the_latest_ones() -> None:
    # context 64, keep 4: 34 tokens kept, the head 4, the tail from 100 - 30 = 70
    first, inside_tail, last = _span(10, 20), _span(60, 20), _span(90, 5)
    cut, images = intake.truncate(list(range(100)), 64, 4, (first, inside_tail, last))
    # the tail began inside the second image: it starts after it, so only the last is kept
    assert cut == [0, 1, 2, 3, *range(80, 100)]
    assert [(s.start, s.end) for s in images] == [(14, 19)]
    head_cut, images = intake.truncate(list(range(100)), 64, 12, (first, last))
    assert head_cut[:10] == list(range(10))  # the head ends before the image it would cut
    assert [s.start for s in images] == [90 - 100 + len(head_cut)]


def test_truncation_that_cannot_keep_the_last_image_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match="last image does not fit"):
        intake.truncate(list(range(100)), 64, 4, (_span(40, 60),))
