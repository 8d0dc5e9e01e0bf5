"""PrefillPacer: chunk sizes from measured step times."""

from __future__ import annotations

import pytest

from olla.engine.pacing import PrefillPacer


def test_unpaced_until_a_decode_step_then_min_chunk_until_a_token_is_measured() -> None:
    pacer = PrefillPacer(min_chunk=8)
    assert pacer.chunk_limit(512, 4) == 512  # no decode-only step yet: nothing to keep pace with
    pacer.observe(decode_rows=4, prompt_tokens=0, seconds=0.020)
    assert pacer.chunk_limit(512, 4) == 8
    assert pacer.chunk_limit(4, 4) == 4  # never over the scheduler's own chunk size


def test_chunk_keeps_a_mixed_step_within_the_slowdown() -> None:
    pacer = PrefillPacer(slowdown=2.0, min_chunk=8, smoothing=1.0)
    pacer.observe(decode_rows=4, prompt_tokens=0, seconds=0.020)
    pacer.observe(decode_rows=4, prompt_tokens=8, seconds=0.028)  # 1 ms per prompt token
    assert pacer.chunk_limit(512, 4) == 20  # 20 ms of room at 1 ms a token
    pacer.observe(decode_rows=4, prompt_tokens=20, seconds=0.120)  # attention got dearer
    assert pacer.chunk_limit(512, 4) == 8  # floored at min_chunk: the prompt still progresses


def test_a_short_prompt_goes_in_whole_within_the_burst() -> None:
    pacer = PrefillPacer(slowdown=2.0, burst=6.0, whole_seconds=0.05, smoothing=1.0)
    assert pacer.whole_prompt_limit(512, 4) == 0  # unmeasured: nothing is known to be short
    pacer.observe(decode_rows=4, prompt_tokens=0, seconds=0.020)
    pacer.observe(decode_rows=4, prompt_tokens=10, seconds=0.030)
    assert pacer.whole_prompt_limit(512, 4) == 100  # 5 decode steps' worth at 1 ms a token
    assert pacer.whole_prompt_limit(64, 4) == 64
    pacer.observe(decode_rows=1, prompt_tokens=0, seconds=0.002)
    assert pacer.whole_prompt_limit(512, 1) == 50  # whole_seconds: 50 ms at 1 ms a token


def test_a_fixed_cost_per_mixed_step_is_told_apart_from_the_cost_per_token() -> None:
    # per-slot KV: the chunk is a pass of its own, 8 ms whatever its size, plus 1 ms a token
    pacer = PrefillPacer(slowdown=2.0, min_chunk=2, smoothing=0.5)
    pacer.observe(decode_rows=4, prompt_tokens=0, seconds=0.020)
    for tokens in (2, 30, 2, 12, 30):
        pacer.observe(decode_rows=4, prompt_tokens=tokens, seconds=0.020 + 0.008 + 0.001 * tokens)
    assert pacer.fixed_seconds == pytest.approx(0.008)
    assert pacer.seconds_per_token == pytest.approx(0.001)
    assert pacer.chunk_limit(512, 4) == 12  # 20 ms of room, 8 of them fixed
    assert pacer.whole_prompt_limit(512, 4) == 242  # whole_seconds, less the fixed 8 ms


def test_fast_prefill_gets_whole_chunks() -> None:
    pacer = PrefillPacer(smoothing=1.0)
    pacer.observe(decode_rows=64, prompt_tokens=0, seconds=0.005)
    pacer.observe(decode_rows=64, prompt_tokens=256, seconds=0.0055)
    assert pacer.chunk_limit(512, 64) == 512


def test_decode_time_is_kept_per_number_of_rows() -> None:
    pacer = PrefillPacer(slowdown=2.0, min_chunk=1, smoothing=1.0)
    pacer.observe(decode_rows=1, prompt_tokens=0, seconds=0.010)
    pacer.observe(decode_rows=8, prompt_tokens=0, seconds=0.040)
    pacer.observe(decode_rows=8, prompt_tokens=10, seconds=0.050)  # 1 ms a token
    assert pacer.chunk_limit(512, 1) == 10
    assert pacer.chunk_limit(512, 8) == 40
    assert pacer.chunk_limit(512, 6) == 40  # nearest measured: 8 rows
    assert pacer.decode_estimate(3) == 0.010


def test_averages_move_by_the_smoothing_weight() -> None:
    pacer = PrefillPacer(smoothing=0.5)
    pacer.observe(decode_rows=1, prompt_tokens=0, seconds=0.010)
    pacer.observe(decode_rows=1, prompt_tokens=0, seconds=0.020)
    assert pacer.decode_seconds[1] == pytest.approx(0.015)
    pacer.observe(decode_rows=0, prompt_tokens=100, seconds=0.1)  # a prompt-only step
    assert pacer.seconds_per_token == pytest.approx(0.001)


@pytest.mark.parametrize(
    "kwargs",
    [{"slowdown": 1.0}, {"min_chunk": 0}, {"smoothing": 0.0}, {"slowdown": 3.0, "burst": 2.0}],
)
def test_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PrefillPacer(**kwargs)  # type: ignore[arg-type]
