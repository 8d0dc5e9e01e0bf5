"""Prefill pacing: how many prompt tokens may share a step with running streams.

A prompt chunk in the same batch as decode rows delays every running stream's next token by the
chunk's cost. The pacer keeps a step with a chunk within `slowdown` times a decode-only step, from
measured decode times: a moving average of decode-only steps for each number of decode rows,
and a line fitted to the extra time a chunk adds: a fixed part (with a per-slot KV cache,
llama.cpp computes the chunk in a pass of its own, which re-reads the weights) and a part per
token. So on a slow CPU a long prompt enters a few tokens per step, on a GPU hundreds, and the
running streams' inter-token latency stays within a bound either way.

A short prompt (a chat turn) whose whole remainder costs at most `burst` times a decode step,
or at most `whole_seconds`, goes in at once: one slower step for the streams, instead of a
first token many steps later. Only long prompts are paced, so the bound holds for all but a few
steps of each stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PrefillPacer:
    """Sizes the prompt chunk of a step that also decodes running streams."""

    slowdown: float = 2.0  # a step with a chunk takes at most this times a decode-only step
    burst: float = 6.0  # a whole short prompt may slow one step down this much
    whole_seconds: float = 0.25  # ... or add this much to it
    min_chunk: int = 2  # a long prompt always makes progress
    smoothing: float = 0.25  # weight of the newest measurement in the moving averages
    decode_seconds: dict[int, float] = field(default_factory=dict)  # by decode rows
    seconds_per_token: float | None = None  # extra time per prompt token in a mixed step
    fixed_seconds: float = 0.0  # extra time of a mixed step whatever its chunk's size
    # exponentially weighted sums for the line: weight, x, y, x*x, x*y (x tokens, y seconds)
    _sums: list[float] = field(default_factory=lambda: [0.0] * 5, repr=False)

    def __post_init__(self) -> None:
        if (
            self.slowdown <= 1
            or self.burst < self.slowdown
            or self.min_chunk < 1
            or not 0 < self.smoothing <= 1
        ):
            raise ValueError(
                "slowdown must be > 1, burst >= slowdown, min_chunk >= 1, smoothing in (0, 1]"
            )

    def chunk_limit(self, max_chunk: int, decode_rows: int) -> int:
        """The most prompt tokens to put beside `decode_rows` decode rows: `max_chunk` until a
        decode-only step is measured (there is nothing to keep a pace with), then `min_chunk`
        until a prompt token's cost is too."""
        if self.decode_estimate(decode_rows) is None:
            return max_chunk
        room = self._tokens_for(self.slowdown, decode_rows)
        return max(min(self.min_chunk, max_chunk), min(room, max_chunk))

    def whole_prompt_limit(self, max_chunk: int, decode_rows: int) -> int:
        """A prompt remainder up to this many tokens goes in whole (0 until measured)."""
        if not self.seconds_per_token:
            return 0
        flat = int(max(self.whole_seconds - self.fixed_seconds, 0.0) / self.seconds_per_token)
        return min(max(self._tokens_for(self.burst, decode_rows), flat), max_chunk)

    def decode_estimate(self, decode_rows: int) -> float | None:
        """Seconds of a decode-only step of `decode_rows` rows: measured for that many rows,
        else for the nearest number measured; None before any."""
        if not self.decode_seconds:
            return None
        if decode_rows in self.decode_seconds:
            return self.decode_seconds[decode_rows]
        nearest = min(self.decode_seconds, key=lambda rows: (abs(rows - decode_rows), rows))
        return self.decode_seconds[nearest]

    def _tokens_for(self, slowdown: float, decode_rows: int) -> int:
        """Prompt tokens that make a decode step `slowdown` times as long; 0 until measured."""
        decode = self.decode_estimate(decode_rows)
        if decode is None or not self.seconds_per_token:
            return 0
        room = (slowdown - 1) * decode - self.fixed_seconds
        return max(int(room / self.seconds_per_token + 1e-6), 0)  # 9.99999 is 10

    def observe(self, decode_rows: int, prompt_tokens: int, seconds: float) -> None:
        """Fold in one step: `decode_rows` single-token rows and `prompt_tokens` chunk tokens."""
        if decode_rows and not prompt_tokens:
            current = self.decode_seconds.get(decode_rows)
            self.decode_seconds[decode_rows] = self._average(current, seconds)
        elif prompt_tokens and decode_rows:
            base = self.decode_estimate(decode_rows) or 0.0
            self._fit(prompt_tokens, max(seconds - base, 0.0))
        elif prompt_tokens and self.seconds_per_token is None:
            # a prompt alone: an upper bound per token until mixed steps are measured
            self.seconds_per_token = seconds / prompt_tokens

    def _fit(self, tokens: int, seconds: float) -> None:
        """Fold one mixed step into the line seconds = fixed + per_token * tokens."""
        keep = 1.0 - self.smoothing
        for i, value in enumerate((1.0, tokens, seconds, tokens * tokens, tokens * seconds)):
            self._sums[i] = keep * self._sums[i] + value
        weight, x, y, xx, xy = self._sums
        spread = weight * xx - x * x
        slope = (weight * xy - x * y) / spread if spread > 1e-9 * weight * xx else 0.0
        if slope <= 0:  # chunks all of one size (or noise): no fixed part can be told apart
            self.fixed_seconds, self.seconds_per_token = 0.0, y / x
            return
        intercept = (y - slope * x) / weight
        if intercept < 0:  # a line through the origin fits better than a negative fixed part
            self.fixed_seconds, self.seconds_per_token = 0.0, xy / xx
        else:
            self.fixed_seconds, self.seconds_per_token = intercept, slope

    def _average(self, current: float | None, sample: float) -> float:
        if current is None:
            return sample
        return current + self.smoothing * (sample - current)
