"""Prefill pacing: how many prompt tokens may share a step with running streams.

A prompt chunk in the same batch as decode rows delays every running stream's next token by the
chunk's cost. The pacer keeps a step with a chunk within `slowdown` times a decode-only step, from
measured decode times: a moving average of decode-only steps, and of the extra time per chunk
token. So on a slow CPU a long prompt enters a few tokens per step, on a GPU hundreds, and the
running streams' inter-token latency stays within a bound either way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PrefillPacer:
    """Sizes the prompt chunk of a step that also decodes running streams."""

    slowdown: float = 2.0  # a step with a chunk takes at most this times a decode-only step
    min_chunk: int = 2  # a long prompt always makes progress
    smoothing: float = 0.25  # weight of the newest measurement in the moving averages
    decode_seconds: float | None = None  # decode-only step
    seconds_per_token: float | None = None  # extra time per prompt token in a mixed step

    def __post_init__(self) -> None:
        if self.slowdown <= 1 or self.min_chunk < 1 or not 0 < self.smoothing <= 1:
            raise ValueError("slowdown must be > 1, min_chunk >= 1, smoothing in (0, 1]")

    def chunk_limit(self, max_chunk: int) -> int:
        """The most prompt tokens to put beside decode rows now (min_chunk until measured)."""
        if self.decode_seconds is None or not self.seconds_per_token:
            return min(self.min_chunk, max_chunk)
        room = (self.slowdown - 1) * self.decode_seconds / self.seconds_per_token
        return max(min(self.min_chunk, max_chunk), min(int(room), max_chunk))

    def observe(self, decode_rows: int, prompt_tokens: int, seconds: float) -> None:
        """Fold in one step: `decode_rows` single-token rows and `prompt_tokens` chunk tokens."""
        if decode_rows and not prompt_tokens:
            self.decode_seconds = self._average(self.decode_seconds, seconds)
        elif prompt_tokens:
            base = self.decode_seconds if decode_rows and self.decode_seconds else 0.0
            per_token = max(seconds - base, 0.0) / prompt_tokens
            self.seconds_per_token = self._average(self.seconds_per_token, per_token)

    def _average(self, current: float | None, sample: float) -> float:
        if current is None:
            return sample
        return current + self.smoothing * (sample - current)
