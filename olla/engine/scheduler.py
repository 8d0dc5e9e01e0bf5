"""Scheduler: which tokens of which sequences go into the next batch. Pure bookkeeping.

Running sequences come first (their next token, or the next chunk of a prompt being prefilled),
then prompts of waiting sequences, first come first served, within a token budget: so a long
prompt is prefilled in chunks and never stalls the streams already running. When blocks run out,
the newest running sequence is preempted by recompute: its blocks are freed (the full ones stay
cached, so recomputing them is mostly prefix hits) and it waits at the front of the queue.

At most one multi-token chunk goes into a batch. With llama.cpp's unified KV cache, two
sequences' multi-token chunks in one micro-batch change each other's logits (measured on
SmolLM2: up to 1.0), while any number of single-token rows beside one chunk leave every row
bit-identical to running alone; so this rule makes each answer independent of its batch mates.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from olla.engine.block_manager import BlockManager, Op
from olla.engine.sequence import Sequence, SequenceStatus


@dataclass(frozen=True)
class ScheduledItem:
    """Feed tokens [start, start + count) of `seq`; sample after them if `want_logits`."""

    seq: Sequence
    start: int
    count: int

    @property
    def want_logits(self) -> bool:
        return self.start + self.count == self.seq.num_tokens


@dataclass
class ScheduledBatch:
    items: list[ScheduledItem] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)  # to apply to the backend before decoding

    @property
    def num_tokens(self) -> int:
        return sum(item.count for item in self.items)


class Scheduler:
    """Keeps the waiting queue and the running set; builds one batch per step."""

    def __init__(
        self, block_manager: BlockManager, max_num_seqs: int, max_batch_tokens: int
    ) -> None:
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_batch_tokens = max_batch_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order: the newest is last
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def schedule(self) -> ScheduledBatch:
        """The next batch: running sequences first, then waiting prompts, within the budget."""
        batch = ScheduledBatch()
        budget = self.max_batch_tokens
        chunk_taken = False
        for seq in list(self.running):
            if budget == 0 or seq not in self.running:  # preempted while making room
                continue
            count = min(seq.num_tokens - seq.num_computed_tokens, budget)
            if count > 1 and chunk_taken:
                continue  # one multi-token chunk per batch (see the module docstring)
            if not self._make_room(seq, seq.num_computed_tokens + count, batch):
                continue
            batch.items.append(ScheduledItem(seq, seq.num_computed_tokens, count))
            budget -= count
            chunk_taken |= count > 1
        while budget > 0 and self.waiting and len(self.running) < self.max_num_seqs:
            seq = self.next_waiting()
            if chunk_taken or not self.block_manager.can_allocate(seq):
                break  # first come, first served: nobody overtakes the head of the queue
            self.waiting.remove(seq)
            batch.ops += self.block_manager.allocate(seq)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            count = min(seq.num_tokens - seq.num_computed_tokens, budget)
            batch.items.append(ScheduledItem(seq, seq.num_computed_tokens, count))
            budget -= count
            chunk_taken |= count > 1
        return batch

    def next_waiting(self) -> Sequence:
        """The sequence to admit next; the seam for fairness between tenants."""
        return self.waiting[0]

    def _make_room(self, seq: Sequence, num_tokens: int, batch: ScheduledBatch) -> bool:
        """Blocks for `seq` up to `num_tokens`, preempting the newest others; False if seq went."""
        while not self.block_manager.can_append(seq, num_tokens):
            victim = self.running[-1]
            self._drop_items(victim, batch)
            batch.ops += self.preempt(victim)
            if victim is seq:
                return False
        batch.ops += self.block_manager.append(seq, num_tokens)
        return True

    def _drop_items(self, seq: Sequence, batch: ScheduledBatch) -> None:
        batch.items = [item for item in batch.items if item.seq is not seq]

    def preempt(self, seq: Sequence) -> list[Op]:
        """Free `seq`'s blocks and queue it first, to be recomputed (its output is kept)."""
        self.running.remove(seq)
        ops = self.block_manager.free(seq)
        seq.status = SequenceStatus.PREEMPTED
        seq.num_computed_tokens = 0
        self.waiting.appendleft(seq)
        self.num_preemptions += 1
        return ops

    def preempt_newest(self) -> list[Op]:
        """Preempt the newest running sequence (after the backend found no room)."""
        return self.preempt(self.running[-1]) if self.running else []

    def finish(self, seq: Sequence, status: SequenceStatus) -> list[Op]:
        """Mark `seq` finished and free its blocks (in this same step)."""
        seq.status = status
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        return self.block_manager.free(seq)
