"""What a step gives back for each sequence it advanced or ended."""

from __future__ import annotations

from dataclasses import dataclass, field

from olla.engine.sampling import TokenLogprob


@dataclass
class StepOutput:
    """What one step did for one sequence: new text and tokens, and whether it finished.

    Durations are in nanoseconds, 0 until known: queue (arrival to first scheduled), prompt
    eval (first scheduled to first token), eval (first token to now), total (arrival to now).
    Counts and durations are set on a sequence's first and last outputs only.
    """

    seq_id: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finished: bool = False
    done_reason: str | None = None
    stop_sequence: str = ""  # the stop string that ended it, if one did
    error: str = ""
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    num_completion_tokens: int = 0
    all_output_ids: list[int] = field(default_factory=list)  # set on the finished output only
    logprobs: list[TokenLogprob] = field(default_factory=list)  # of token_ids, when asked
    queue_ns: int = 0
    prompt_eval_ns: int = 0
    eval_ns: int = 0
    total_ns: int = 0
