"""Sequence: all per-request state of the engine, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from olla.engine.sampling import SamplingParams

if TYPE_CHECKING:
    from olla.engine.constraint import Constraint
    from olla.engine.detokenizer import Detokenizer


class SequenceStatus(IntEnum):
    """Ordered so that `status > PREEMPTED` means finished."""

    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2  # back in the waiting queue, to be recomputed
    FINISHED_STOPPED = 3  # end-of-generation token or stop string
    FINISHED_LENGTH = 4  # num_predict reached or the context is full
    FINISHED_ABORTED = 5  # cancelled
    FINISHED_ERROR = 6
    FINISHED_QUEUE_TIMEOUT = 7  # waited past the queue timeout without ever being admitted


QUEUE_TIMEOUT = "queue_timeout"  # the done reason of FINISHED_QUEUE_TIMEOUT
DONE_REASONS: dict[SequenceStatus, str] = {
    SequenceStatus.FINISHED_STOPPED: "stop",
    SequenceStatus.FINISHED_LENGTH: "length",
    SequenceStatus.FINISHED_ABORTED: "cancelled",
    SequenceStatus.FINISHED_ERROR: "error",
    SequenceStatus.FINISHED_QUEUE_TIMEOUT: QUEUE_TIMEOUT,
}


@dataclass(frozen=True)
class NewSequence:
    """What a `Stepper` is asked to generate: a prompt, how to sample, how many tokens at most,
    whose it is (for round-robin admission), and a grammar to follow (the engine closes it)."""

    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int
    tenant: str = ""
    constraint: Constraint | None = None


@dataclass(eq=False)
class Sequence:
    """One request in the engine: its tokens, sampling, KV placement and progress."""

    seq_id: int
    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int  # completion budget, already capped by the context
    arrival: float = 0.0
    tenant: str = ""
    detokenizer: Detokenizer | None = None
    constraint: Constraint | None = None  # a grammar the output must follow (structured output)
    output_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    num_computed_tokens: int = 0  # tokens whose keys and values are in the slot's cells
    num_cached_tokens: int = 0  # tokens the prefix cache supplied at the latest admission
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[bytes] = field(default_factory=list)  # chained, of full blocks; lazy
    slot: int | None = None
    # the scheduler has given it a slot at least once: it no longer waits for its first turn
    # (one sent back to waiting, preempted or to share, has run and is never expired)
    admitted: bool = False
    # its token is the raw logits' argmax: a backend may draw it on its device
    device_greedy: bool = False
    new_text: str = ""  # text released by the latest token, for the engine to stream
    first_scheduled_time: float | None = None
    first_token_time: float | None = None

    @property
    def is_finished(self) -> bool:
        return self.status > SequenceStatus.PREEMPTED

    def __post_init__(self) -> None:
        self.device_greedy = self.params.argmax_only and self.constraint is None

    @property
    def done_reason(self) -> str | None:
        return DONE_REASONS.get(self.status)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_completion_tokens(self) -> int:
        return len(self.output_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def last_token(self) -> int:
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]

    @property
    def all_ids(self) -> list[int]:
        """Prompt + output, as a new list: not for the hot path (use `tokens`)."""
        return self.prompt_ids + self.output_ids

    def num_blocks(self, block_size: int) -> int:
        """Blocks needed to hold all of this sequence's tokens."""
        return -(-self.num_tokens // block_size)

    def tokens(self, start: int, end: int) -> list[int]:
        """Tokens [start, end) of prompt + output, copying only that range."""
        n = len(self.prompt_ids)
        if end <= n:
            return self.prompt_ids[start:end]
        if start >= n:
            return self.output_ids[start - n : end - n]
        return self.prompt_ids[start:] + self.output_ids[: end - n]

    def recent_tokens(self, n: int) -> list[int]:
        """The last `n` tokens (all of them when n is -1), for repetition penalties."""
        total = self.num_tokens
        return self.tokens(0 if n < 0 else max(0, total - n), total)
