"""Request intake: a prompt past the context is cut at the token level as Ollama cuts it, and the
sequence is told whether it may shift."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from olla.backends.fake import FakeBackend
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
    cut = intake.truncate(prompt, num_ctx, keep)
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
