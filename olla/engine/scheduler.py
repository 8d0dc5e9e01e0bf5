"""Scheduler: which tokens of which sequences go into the next batch. Pure bookkeeping.

Every running sequence's next token comes first, then prompt chunks (chunked prefill) of the
sequences being prefilled, oldest first, then of newly admitted ones, first come first served,
within a token budget: a long prompt is prefilled a chunk per step beside the running streams
and never stalls them. When blocks run out, the newest running sequence is preempted by
recompute: its blocks are freed (the full ones stay cached, so recomputing them is mostly
prefix hits) and it waits at the front of the queue with its output kept.

At most `max_prefill_seqs` multi-token chunks go into one batch (default one: on a CPU a
prompt token costs the same in any batch, so admitting a burst of requests one per step gives
the first ones their first token sooner, and the last no later). With llama.cpp's unified KV cache
a row's logits are not independent of the rest of the cache anyway: where other sequences'
cells sit changes a chunk's logits by up to 0.7 on SmolLM2 (summation order), batch mates or
not; only single-token rows beside one chunk leave every row exactly as it is alone.

A batch with decode rows takes prompt tokens only as the engine's pacer allows (see
`olla.engine.pacing`), so a long prompt enters in small chunks and running streams keep their
pace.

A sequence that may shift (`Sequence.may_shift`) and whose next token would sit at position
`context_len` shifts its context as its token is appended (see `BlockManager.shift`); where its
cells cannot move it is preempted instead, to recompute its shifted context.

With a `queue_timeout`, a sequence that has waited that long for its first admission is finished
by `expire` (FINISHED_QUEUE_TIMEOUT), so that under overload a request is refused while its
client can still go elsewhere, rather than served minutes late. A sequence sent back to waiting
(preempted, or giving up its slot to share) has run already and keeps its place.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from olla.engine.block_manager import BlockManager, Op
from olla.engine.images import ImageSpan, next_span, span_at
from olla.engine.sequence import Sequence, SequenceStatus


@dataclass(frozen=True)
class ScheduledItem:
    """Feed tokens [start, start + count) of `seq` at those positions; sample if `want_logits`.

    With `image`, the cells [start, start + count) are that image's (the rest of it, from
    `start`), fed with its embeddings in a decode call of their own.
    """

    seq: Sequence
    start: int
    count: int
    want_logits: bool  # the last token of the sequence is fed: decode rows, a prompt's last chunk
    image: ImageSpan | None = None

    @property
    def token_ids(self) -> list[int]:
        return self.seq.tokens(self.start, self.start + self.count)


@dataclass
class ScheduledBatch:
    """One step's work, and the cache operations to apply to the backend before it."""

    items: list[ScheduledItem] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(item.count for item in self.items)


class Scheduler:
    """Keeps the waiting queue and the running set; builds one batch per step."""

    def __init__(
        self,
        block_manager: BlockManager,
        max_num_seqs: int,
        max_batch_tokens: int,
        chunk_size: int | None = None,
        max_prefill_seqs: int = 1,
        is_end_of_generation: Callable[[int], bool] = lambda token: False,
        queue_timeout: float = 0.0,
        context_len: int | None = None,
    ) -> None:
        """`queue_timeout`: seconds a sequence may wait for its first admission (0: no limit);
        `context_len`: positions one sequence may use (None: as many as its blocks)."""
        if not 1 <= max_num_seqs <= block_manager.num_slots:
            raise ValueError(f"max_num_seqs must be in [1, {block_manager.num_slots}] (slots)")
        if max_batch_tokens < max_num_seqs:
            raise ValueError("max_batch_tokens must be >= max_num_seqs (a token for each)")
        if (chunk_size is not None and chunk_size < 1) or max_prefill_seqs < 1:
            raise ValueError("chunk_size and max_prefill_seqs must be positive")
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_batch_tokens = max_batch_tokens
        self.chunk_size = chunk_size or max_batch_tokens
        self.max_prefill_seqs = max_prefill_seqs
        self.is_end_of_generation = is_end_of_generation
        self.queue_timeout = queue_timeout
        self.context_len = context_len
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order
        self._seqs: dict[int, Sequence] = {}  # waiting or running, by id
        self._ops: list[Op] = []  # cache operations not yet handed out, in order
        self.num_preemptions = 0
        self.num_shifts = 0
        self.num_shift_recomputes = 0  # shifts whose cells could not move (see BlockManager)
        self._last_tenant: str | None = None  # whose sequence was admitted last

    @property
    def has_work(self) -> bool:
        return bool(self._seqs)

    @property
    def num_decoding(self) -> int:
        """Running sequences past their prompt: the decode rows of the next batch."""
        return sum(1 for s in self.running if s.num_tokens - s.num_computed_tokens == 1)

    def add(self, seq: Sequence) -> None:
        self._seqs[seq.seq_id] = seq
        self.waiting.append(seq)

    def take_ops(self) -> list[Op]:
        """Cache operations queued by frees (finish, abort, preemption), to apply now."""
        ops, self._ops = self._ops, []
        return ops

    def schedule(
        self, admit: bool = True, chunk_limit: int | None = None, whole_prompt_limit: int = 0
    ) -> ScheduledBatch:
        """The next batch: decodes, then prefill chunks; `admit` False takes no new sequence.

        `chunk_limit` caps the prompt tokens of a batch that also decodes running streams (see
        `olla.engine.pacing`), except that a prompt with at most `whole_prompt_limit` tokens
        left goes in whole; a batch with no decode rows takes chunks of up to `chunk_size`.
        """
        batch = ScheduledBatch()
        budget = self.max_batch_tokens
        if admit:
            self._share()
        room = self.block_manager.block_size
        for seq in [s for s in self.running if s.num_tokens - s.num_computed_tokens == 1]:
            if budget == 0:
                break
            if seq.status != SequenceStatus.RUNNING:  # preempted for room in this loop
                continue
            if seq.num_computed_tokens < len(seq.block_table) * room or self._make_room(
                seq, batch
            ):  # room in its last block, or a new block for it
                start = seq.num_computed_tokens
                image = span_at(seq.images, start) if seq.images else None
                batch.items.append(ScheduledItem(seq, start, 1, True, image))
                budget -= 1
        paced = chunk_limit is not None and bool(batch.items)
        allowance = _Allowance(chunk_limit or 0, whole_prompt_limit) if paced else None
        prefilling = [s for s in self.running if s.num_tokens - s.num_computed_tokens > 1]
        budget = self._add_chunks(prefilling, budget, batch, allowance)
        if admit:
            self._add_chunks(self._admit(budget, batch), budget, batch, allowance)
        batch.ops = self.take_ops()
        return batch

    def next_waiting(self) -> Sequence:
        """The sequence to admit next: a preempted one first (it was running), else round-robin
        across tenants (users) in the order they came, first come first served within each."""
        first = self.waiting[0]
        if first.status == SequenceStatus.PREEMPTED:
            return first
        earliest: dict[str, Sequence] = {}  # tenant -> its first waiting sequence, in order
        for seq in self.waiting:
            if seq.status != SequenceStatus.PREEMPTED:
                earliest.setdefault(seq.tenant, seq)
        tenants = sorted(earliest, key=lambda t: (earliest[t].arrival, earliest[t].seq_id))
        if len(tenants) == 1 or self._last_tenant not in earliest:
            # nothing more from whoever went last: the tenant after it in arrival order is the
            # one that has waited longest
            return earliest[tenants[0]]
        at = tenants.index(self._last_tenant)
        return earliest[tenants[(at + 1) % len(tenants)]]

    def update(self, batch: ScheduledBatch, sampled: Iterable[int]) -> list[Sequence]:
        """Fold a decoded batch back: `sampled` has one token per item that wanted logits.

        Returns the sequences that got a token, in batch order; finished ones are freed, and
        their cache operations queued (see `take_ops`).
        """
        tokens = iter(sampled)
        updated = []
        bs = self.block_manager.block_size
        for item in batch.items:
            seq = item.seq
            seq.num_computed_tokens = computed = item.start + item.count
            if item.count > 1 or computed % bs == 0:  # else no block was filled
                self.block_manager.commit(seq)
            if item.want_logits:
                self._append_token(seq, int(next(tokens)))
                updated.append(seq)
        return updated

    def abort(self, seq_id: int) -> Sequence | None:
        """Cancel a waiting or running sequence; its blocks are freed at once."""
        seq = self._seqs.get(seq_id)
        if seq is not None:
            seq.new_text = ""
            self.finish(seq, SequenceStatus.FINISHED_ABORTED)
        return seq

    def finish(self, seq: Sequence, status: SequenceStatus) -> None:
        """Mark `seq` finished with `status` and free its blocks."""
        if seq.status == SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif not seq.is_finished:
            self.waiting.remove(seq)
        seq.status = status
        self._seqs.pop(seq.seq_id, None)
        self._ops += self.block_manager.free(seq)

    def expire(self, now: float) -> list[Sequence]:
        """Finish the waiting sequences that were never admitted and arrived `queue_timeout` or
        more before `now` (FINISHED_QUEUE_TIMEOUT); returns them, oldest first."""
        if self.queue_timeout <= 0 or not self.waiting:
            return []
        latest = now - self.queue_timeout
        expired = [s for s in self.waiting if not s.admitted and s.arrival <= latest]
        for seq in expired:
            self.finish(seq, SequenceStatus.FINISHED_QUEUE_TIMEOUT)
        return sorted(expired, key=lambda s: (s.arrival, s.seq_id))

    def preempt(self, seq: Sequence) -> None:
        """Free a running `seq`'s blocks and queue it first, to recompute prompt and output."""
        self._evict(seq, SequenceStatus.PREEMPTED)
        self.waiting.appendleft(seq)

    def _evict(self, seq: Sequence, status: SequenceStatus) -> None:
        """Take a running `seq` off its slot and blocks; it is computed again on admission."""
        self.running.remove(seq)
        self._ops += self.block_manager.free(seq)
        seq.status = status
        seq.num_computed_tokens = 0  # all of prompt + output is prefilled again on admission
        self.num_preemptions += 1

    def _share(self) -> None:
        """When every slot is taken and a tenant with nothing running waits, the tenant holding
        the most slots gives one up: its newest sequence goes back to waiting, in its place by
        arrival (recomputed on readmission), so one user's flood cannot shut the others out."""
        if len(self.running) < self.max_num_seqs or not self.waiting:
            return
        held: dict[str, int] = {}
        for seq in self.running:
            held[seq.tenant] = held.get(seq.tenant, 0) + 1
        if not any(seq.tenant not in held for seq in self.waiting):
            return
        heavy = max(held, key=lambda tenant: held[tenant])
        if held[heavy] < 2:
            return  # everyone running holds one slot: the newcomer waits its turn
        victim = max(
            (s for s in self.running if s.tenant == heavy), key=lambda s: (s.arrival, s.seq_id)
        )
        self._evict(victim, SequenceStatus.WAITING)
        at = next(
            (i for i, s in enumerate(self.waiting) if s.arrival > victim.arrival), len(self.waiting)
        )
        self.waiting.insert(at, victim)

    def preempt_newest(self) -> Sequence | None:
        """Preempt the running sequence that arrived last, if any."""
        if not self.running:
            return None
        seq = max(self.running, key=lambda s: (s.arrival, s.seq_id))
        self.preempt(seq)
        return seq

    def _make_room(self, seq: Sequence, batch: ScheduledBatch) -> bool:
        """A block for `seq`'s next token, preempting the newest others; False if seq went."""
        while not self.block_manager.can_append(seq):
            victim = self.preempt_newest()
            batch.items = [item for item in batch.items if item.seq is not victim]
            if victim is seq:
                return False
        self._ops += self.block_manager.append(seq)
        return True

    def _admit(self, budget: int, batch: ScheduledBatch) -> list[Sequence]:
        """Take waiting sequences in order while there is room for them; allocate their blocks."""
        admitted: list[Sequence] = []
        while (
            self.waiting
            and budget > len(admitted)
            and len(admitted) < self.max_prefill_seqs - _num_chunks(batch)
            and len(self.running) < self.max_num_seqs
        ):
            seq = self.next_waiting()
            if not self.block_manager.can_allocate(seq):
                break  # first come, first served: nobody overtakes the sequence chosen
            self.waiting.remove(seq)
            self._ops += self.block_manager.allocate(seq)
            seq.status = SequenceStatus.RUNNING
            seq.admitted = True
            self.running.append(seq)
            admitted.append(seq)
            self._last_tenant = seq.tenant
        return admitted

    def _add_chunks(
        self,
        seqs: list[Sequence],
        budget: int,
        batch: ScheduledBatch,
        allowance: _Allowance | None = None,
    ) -> int:
        """The next prompt chunk of each of `seqs` that fits; returns the budget left."""
        for seq in seqs:
            remaining = seq.num_tokens - seq.num_computed_tokens
            if budget == 0 or seq.status != SequenceStatus.RUNNING or remaining == 0:
                continue
            if remaining > 1 and _num_chunks(batch) >= self.max_prefill_seqs:
                continue
            start = seq.num_computed_tokens
            if seq.images and (image := span_at(seq.images, start)) is not None:
                # the rest of an image goes in at once, in its own decode call: it takes no
                # token budget, and counts as the batch's prompt chunk
                count = image.end - start
                batch.items.append(ScheduledItem(seq, start, count, count == remaining, image))
                continue
            count = min(remaining, self.chunk_size, budget)
            if seq.images and (after := next_span(seq.images, start)) is not None:
                count = min(count, after.start - start)  # a chunk of tokens stops at an image
            if allowance is not None:
                count = allowance.take(count, count == remaining, _num_chunks(batch) == 0)
                if count == 0:
                    continue
            batch.items.append(ScheduledItem(seq, start, count, count == remaining))
            budget -= count
        return budget

    def _append_token(self, seq: Sequence, token: int) -> None:
        seq.output_ids.append(token)
        detokenizer = seq.detokenizer
        status = None
        if self.is_end_of_generation(token):
            seq.new_text = ""
            status = SequenceStatus.FINISHED_STOPPED
        else:
            seq.new_text = detokenizer.add(token) if detokenizer else ""
            if detokenizer is not None and detokenizer.stopped:
                status = SequenceStatus.FINISHED_STOPPED
            elif seq.num_completion_tokens >= seq.max_tokens:
                status = SequenceStatus.FINISHED_LENGTH
            elif self.context_len is not None and seq.num_tokens > self.context_len:
                if not seq.may_shift:  # its budget is capped by the context: not reached
                    status = SequenceStatus.FINISHED_LENGTH
                else:
                    self._shift(seq)
        if status is not None:
            if detokenizer is not None:
                seq.new_text += detokenizer.finish()  # what was held back as a possible stop
            self.finish(seq, status)

    def _shift(self, seq: Sequence) -> None:
        """The context is full: shift it in place, else discard and recompute the rest."""
        # A shift's cost is the next decode re-rotating the moved keys at their new positions
        # (seq_rm and seq_add themselves: 0.1 ms at a context of 256, 2 ms at 4,096). Measured
        # on SmolLM2-135M, 2 shared CPU cores: +6 ms on an 11 ms step at 256, about +90 ms on a
        # 50 ms step at 4,096; once per half a context of tokens, under 0.1 ms a token.
        self.num_shifts += 1
        ops = self.block_manager.shift(seq)
        if ops is not None:
            self._ops += ops
            return
        self.num_shift_recomputes += 1
        seq.discard(seq.num_shift_discard)
        self.block_manager.stop_hashing(seq)
        self.preempt(seq)  # its hashed blocks stay cached: their cells did not move


@dataclass
class _Allowance:
    """Prompt tokens a batch with decode rows may still take: `tokens` in chunks, or `whole`
    for chunks that finish their prompt (a short prompt goes in at once)."""

    tokens: int
    whole: int

    def take(self, wanted: int, finishes: bool, first: bool) -> int:
        """Tokens granted of `wanted`; `finishes`: they are the rest of the prompt."""
        if finishes and wanted <= self.whole:
            count = wanted
        elif self.tokens > 0:
            count = min(wanted, self.tokens)
        else:
            count = 1 if first else 0  # a long prompt always advances
        self.tokens -= count
        self.whole -= count
        return count


def _num_chunks(batch: ScheduledBatch) -> int:
    return sum(1 for item in batch.items if item.count > 1)
