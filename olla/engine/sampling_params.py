"""SamplingParams: how a sequence picks its tokens, with Ollama's option names and defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from olla.chat import MAX_TOP_LOGPROBS
from olla.errors import InvalidRequest


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence picks its next tokens; defaults are Ollama's."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.0  # Ollama's default since it moved from 1.1 (api.DefaultOptions)
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    # -1: until it ends (with shift, 10 contexts at most); -2: the same, as Ollama accepts it
    num_predict: int = -1
    stop: tuple[str, ...] = ()
    logprobs: int = -1  # report each token's log-probability and this many alternatives; -1: off

    def __post_init__(self) -> None:
        checks = (
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= 0, "top_k must be >= 0 (0 disables it)"),
            (0 <= self.top_p <= 1, "top_p must be between 0 and 1"),
            (0 <= self.min_p <= 1, "min_p must be between 0 and 1"),
            (0 < self.typical_p <= 1, "typical_p must be in (0, 1]"),
            (self.repeat_penalty > 0, "repeat_penalty must be > 0"),
            (self.repeat_last_n >= -1, "repeat_last_n must be >= -1 (-1: the whole context)"),
            (self.num_predict >= -2, "num_predict must be >= -2"),
            (all(self.stop), "stop sequences must not be empty"),
            (
                -1 <= self.logprobs <= MAX_TOP_LOGPROBS,
                f"top_logprobs must be 0 to {MAX_TOP_LOGPROBS}",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise InvalidRequest(f"invalid option: {message}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def penalized(self) -> bool:
        """Whether repetition penalties change the logits before the draw."""
        return self.repeat_last_n != 0 and (
            self.repeat_penalty != 1 or self.frequency_penalty != 0 or self.presence_penalty != 0
        )

    @property
    def argmax_only(self) -> bool:
        """The token is the argmax of the raw logits, and nothing else is asked of them."""
        return self.greedy and not self.penalized and self.logprobs < 0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SamplingParams:
        """Take the sampling options out of merged, typed Ollama options; ignore the others."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in options.items() if k in names and v is not None}
        if "stop" in values:
            stop = values["stop"]
            values["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
        return cls(**values)
