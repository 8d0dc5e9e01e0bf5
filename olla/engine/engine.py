"""Engine: add / abort / step. Owns the scheduler, block manager and backend; no locks, no I/O.

A runner calls `step()` from one thread, in a loop: schedule a batch, apply the block manager's
cache operations, decode, sample the rows that need it, detokenize, finish what is done.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from olla.backends.base import Backend, ForwardBatch, KVCacheFull
from olla.engine.block_manager import BlockManager, CopyPrefix, Op, Remove
from olla.engine.detokenizer import Detokenizer
from olla.engine.sampling import SamplingParams
from olla.engine.scheduler import ScheduledBatch, Scheduler
from olla.engine.sequence import Sequence, SequenceStatus
from olla.errors import InvalidRequest

log = logging.getLogger(__name__)


class SamplerProtocol(Protocol):
    def sample(self, logits: npt.NDArray[np.float32], seqs: list[Sequence]) -> npt.NDArray[Any]:
        """One token per row of logits, for the sequence of that row."""
        ...

    def forget(self, seq_id: int) -> None: ...


@dataclass
class StepOutput:
    """What one step did for one sequence: new text and tokens, and whether it finished."""

    seq_id: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finished: bool = False
    done_reason: str | None = None
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    num_completion_tokens: int = 0
    all_output_ids: list[int] = field(default_factory=list)


class Engine:
    """Continuous batching over a paged KV cache for one loaded model."""

    def __init__(
        self,
        backend: Backend,
        sampler: SamplerProtocol,
        block_size: int = 16,
        max_num_seqs: int = 4,
        max_batch_tokens: int = 512,
        max_model_len: int | None = None,
        enable_prefix_cache: bool = True,
    ) -> None:
        self.backend = backend
        self.sampler = sampler
        num_blocks = backend.num_cells // block_size
        self.block_manager = BlockManager(
            num_blocks, block_size, backend.num_slots, enable_prefix_cache
        )
        self.scheduler = Scheduler(self.block_manager, max_num_seqs, max_batch_tokens)
        self.max_model_len = max_model_len or num_blocks * block_size
        self._ids = itertools.count(1)
        self._seqs: dict[int, Sequence] = {}
        self._ops: list[Op] = []  # cache operations to apply before the next decode
        self.num_steps = 0
        self.decode_seconds = 0.0
        self.step_seconds = 0.0

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def add(
        self, prompt_ids: list[int], params: SamplingParams, max_tokens: int, tenant: str = ""
    ) -> int:
        """Queue a sequence; returns its id. InvalidRequest if it cannot fit the context."""
        if not prompt_ids:
            raise InvalidRequest("the prompt is empty after tokenization")
        if len(prompt_ids) >= self.max_model_len:
            raise InvalidRequest(
                f"the prompt is {len(prompt_ids)} tokens; the context holds {self.max_model_len}"
            )
        seq = Sequence(
            seq_id=next(self._ids),
            prompt_ids=list(prompt_ids),
            params=params,
            max_tokens=min(max_tokens, self.max_model_len - len(prompt_ids)),
            detokenizer=Detokenizer(self.backend.token_bytes, params.stop),
            tenant=tenant,
        )
        self._seqs[seq.seq_id] = seq
        self.scheduler.add(seq)
        return seq.seq_id

    def abort(self, seq_id: int) -> None:
        """Cancel a sequence; its blocks are freed before the next decode."""
        seq = self._seqs.pop(seq_id, None)
        if seq is not None and not seq.is_finished:
            self._ops += self.scheduler.finish(seq, SequenceStatus.FINISHED_ABORTED)
            self.sampler.forget(seq_id)

    def step(self) -> list[StepOutput]:
        """Run one batch; return the outputs of the sequences that produced a token or ended."""
        start = time.perf_counter()
        batch = self.scheduler.schedule()
        self._apply(self._ops + batch.ops)
        self._ops = []
        if not batch.items:
            return []
        decode_start = time.perf_counter()
        try:
            logits = self.backend.decode(self._forward_batch(batch))
        except KVCacheFull:
            log.info("KV cache full: preempting the newest sequence")
            self._ops += self.scheduler.preempt_newest()
            return []
        except Exception as exc:  # a backend fault fails this batch's sequences, not the engine
            log.exception("decode failed")
            return self._fail(batch, exc)
        self.decode_seconds += time.perf_counter() - decode_start
        outputs = self._update(batch, logits)
        self._apply(self._ops)  # finished sequences give their cells back in this same step
        self._ops = []
        self.num_steps += 1
        self.step_seconds += time.perf_counter() - start
        return outputs

    def _apply(self, ops: list[Op]) -> None:
        for op in ops:
            if isinstance(op, Remove):
                self.backend.remove(op.slot, op.start)
            elif isinstance(op, CopyPrefix):
                self.backend.copy_prefix(op.source, op.destination, op.length)

    def _forward_batch(self, batch: ScheduledBatch) -> ForwardBatch:
        items = batch.items
        counts = np.fromiter((item.count for item in items), np.int32, len(items))
        starts = np.fromiter((item.start for item in items), np.int32, len(items))
        tokens = np.fromiter(
            itertools.chain.from_iterable(
                item.seq.tokens(item.start, item.start + item.count) for item in items
            ),
            np.int32,
            int(counts.sum()),
        )
        # positions: start, start+1, ... for each item, built without a per-token Python loop
        offsets = np.arange(len(tokens), dtype=np.int32) - np.repeat(
            np.cumsum(counts) - counts, counts
        )
        positions = np.repeat(starts, counts) + offsets
        slots = np.repeat(
            np.fromiter((item.seq.slot for item in items), np.int32, len(items)), counts
        )
        want = np.zeros(len(tokens), dtype=bool)
        ends = np.cumsum(counts) - 1
        want[ends] = [item.want_logits for item in items]
        return ForwardBatch(tokens, positions.astype(np.int32), slots, want)

    def _update(self, batch: ScheduledBatch, logits: npt.NDArray[np.float32]) -> list[StepOutput]:
        sampled_seqs = [item.seq for item in batch.items if item.want_logits]
        tokens: Any = self.sampler.sample(logits, sampled_seqs) if sampled_seqs else []
        for item in batch.items:
            item.seq.num_computed_tokens = item.start + item.count
            self.block_manager.commit(item.seq)
        return [
            self._emit(seq, int(token)) for seq, token in zip(sampled_seqs, tokens, strict=True)
        ]

    def _emit(self, seq: Sequence, token: int) -> StepOutput:
        detokenizer = seq.detokenizer
        assert detokenizer is not None, "Engine.add gives every sequence a detokenizer"
        seq.output_ids.append(token)
        out = StepOutput(seq.seq_id, token_ids=[token])
        status = None
        if self.backend.is_end_of_generation(token):
            status = SequenceStatus.FINISHED_STOPPED
        else:
            out.text = detokenizer.add(token)
            if detokenizer.stopped:
                status = SequenceStatus.FINISHED_STOPPED
            elif seq.num_completion_tokens >= seq.max_tokens:
                status = SequenceStatus.FINISHED_LENGTH
            elif seq.num_tokens >= self.max_model_len:
                status = SequenceStatus.FINISHED_LENGTH
        if status is not None:
            out.text += detokenizer.finish()
            self._finish(seq, status, out)
        return out

    def _finish(self, seq: Sequence, status: SequenceStatus, out: StepOutput) -> None:
        self._ops += self.scheduler.finish(seq, status)
        self.sampler.forget(seq.seq_id)
        self._seqs.pop(seq.seq_id, None)
        out.finished, out.done_reason = True, seq.done_reason
        out.num_prompt_tokens = seq.num_prompt_tokens
        out.num_cached_tokens = seq.num_cached_tokens
        out.num_completion_tokens = seq.num_completion_tokens
        out.all_output_ids = list(seq.output_ids)

    def _fail(self, batch: ScheduledBatch, exc: Exception) -> list[StepOutput]:
        outputs = []
        for item in batch.items:
            if item.seq.is_finished:
                continue
            out = StepOutput(item.seq.seq_id)
            self._finish(item.seq, SequenceStatus.FINISHED_ERROR, out)
            outputs.append(out)
        return outputs

    def stats(self) -> dict[str, Any]:
        """Counters for health checks and metrics."""
        bm = self.block_manager
        return {
            "running": len(self.scheduler.running),
            "waiting": len(self.scheduler.waiting),
            "blocks_total": bm.num_blocks,
            "blocks_free": bm.num_free_blocks,
            "blocks_cached": bm.num_cached_blocks,
            "prefix_hit_rate": bm.num_prefix_hits / bm.num_prefix_queries
            if bm.num_prefix_queries
            else 0.0,
            "preemptions": self.scheduler.num_preemptions,
            "steps": self.num_steps,
            "host_overhead": (self.step_seconds - self.decode_seconds) / self.decode_seconds
            if self.decode_seconds
            else 0.0,
        }
