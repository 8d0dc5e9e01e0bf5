"""Sequence: all per-request state of the engine, in one place.

A sequence that fills its context shifts it (Ollama's `shift`): the oldest half of the tokens
after its first `num_keep` leaves the KV cache and the rest move down. Every shift discards the
tokens right after the kept head, so all the discarded tokens together are one run of the whole
history, [num_keep, num_keep + num_discarded): the context (what cells and positions refer to)
is the history less that run. So the sequence keeps its whole `prompt_ids` and `output_ids`
(for counts, stop strings, the detokenizer and num_predict) and one count, `num_discarded`;
`num_tokens`, `tokens()` and every position the scheduler and block manager use address the
context. Unshifted (nearly always) that costs the hot path one subtraction and one test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from olla.engine.images import ImageSpan
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
    # on reaching the context, discard the older half after the first `num_keep` tokens and go
    # on (Ollama's `shift`), where the backend can; else end with done reason "length"
    shift: bool = False
    num_keep: int = 4  # Ollama's default
    # the prompt's images, in order: their cells hold placeholder ids (olla.engine.images)
    images: tuple[ImageSpan, ...] = ()


@dataclass(eq=False)
class Sequence:
    """One request in the engine: its tokens, sampling, KV placement and progress."""

    seq_id: int
    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int  # completion budget; capped by the context unless it may shift
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
    may_shift: bool = False  # shifts its context when full, rather than ending
    num_keep: int = 0  # tokens at the start of the context a shift keeps
    num_discarded: int = 0  # tokens shifted out, the run of history after the first num_keep
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    images: tuple[ImageSpan, ...] = ()  # the prompt's images (olla.engine.images)
    # blocks past this many tokens are never prefix-cached (None: no limit): under M-RoPE a
    # cell's position is not its index past an image, and the cache's removals go by index
    prefix_limit: int | None = None

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
        """Tokens in the context: prompt + output less what shifts discarded."""
        return len(self.prompt_ids) + len(self.output_ids) - self.num_discarded

    @property
    def last_token(self) -> int:
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]

    @property
    def all_ids(self) -> list[int]:
        """Prompt + output, as a new list: not for the hot path (use `tokens`)."""
        return self.prompt_ids + self.output_ids

    @property
    def num_shift_discard(self) -> int:
        """Tokens the next shift discards: half of those after the kept head, at least one."""
        return max(1, (self.num_computed_tokens - self.num_keep) // 2)

    def num_blocks(self, block_size: int) -> int:
        """Blocks needed to hold all of this sequence's context."""
        return -(-self.num_tokens // block_size)

    def discard(self, num_tokens: int) -> None:
        """Shift the context: its tokens [num_keep, num_keep + num_tokens) leave it."""
        self.num_discarded += num_tokens
        self.num_computed_tokens -= num_tokens

    def tokens(self, start: int, end: int) -> list[int]:
        """Tokens at context positions [start, end), copying only that range."""
        if not self.num_discarded:
            return self._history(start, end)
        keep, gone = self.num_keep, self.num_discarded
        if end <= keep:
            return self._history(start, end)
        if start >= keep:
            return self._history(start + gone, end + gone)
        return self._history(start, keep) + self._history(keep + gone, end + gone)

    def _history(self, start: int, end: int) -> list[int]:
        """Tokens [start, end) of prompt + output."""
        n = len(self.prompt_ids)
        if end <= n:
            return self.prompt_ids[start:end]
        if start >= n:
            return self.output_ids[start - n : end - n]
        return self.prompt_ids[start:] + self.output_ids[: end - n]

    def recent_tokens(self, n: int) -> list[int]:
        """The context's last `n` tokens (all of them when n is -1, as llama.cpp's penalty over
        the context), for repetition penalties."""
        total = self.num_tokens
        recent = self.tokens(0 if n < 0 else max(0, total - n), total)
        if self.images:  # an image's placeholder ids are no tokens to penalise
            recent = [t for t in recent if t >= 0]
        return recent
