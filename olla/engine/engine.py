"""Engine: add / abort / step. Owns the scheduler, block manager and backend; no locks, no I/O.

A runner calls `step()` from one thread, in a loop: schedule a batch, apply the block manager's
cache operations, decode, sample the rows that need it, detokenize, finish what is done.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from olla.engine.backend import Backend, KVCacheFull
from olla.engine.block_manager import BlockManager
from olla.engine.cache_ops import CopyPrefix, Op, Remove, Shift
from olla.engine.detokenizer import Detokenizer
from olla.engine.forward import forward_batch, image_position
from olla.engine.outputs import StepOutput
from olla.engine.pacing import PrefillPacer
from olla.engine.sampling import TokenLogprob
from olla.engine.scheduler import ScheduledBatch, ScheduledItem, Scheduler
from olla.engine.sequence import NewSequence, Sequence, SequenceStatus
from olla.errors import InvalidRequest

log = logging.getLogger(__name__)


class SamplerProtocol(Protocol):
    """Picks the next token of each row's sequence; vectorised over the rows."""

    def sample(
        self, logits: npt.NDArray[np.float32], seqs: list[Sequence]
    ) -> npt.NDArray[np.integer[Any]]:
        """One token per row of `logits` (rows, vocab), for the sequence of that row."""
        ...

    def forget(self, seq_id: int) -> None:
        """Drop any per-sequence state (random generator) of a finished sequence."""
        ...

    def take_logprobs(self, seq_id: int) -> TokenLogprob | None:
        """The log-probabilities of the sequence's last token, if it asked for them."""
        ...


class Engine:
    """Continuous batching over a paged KV cache for one loaded model."""

    def __init__(
        self,
        backend: Backend,
        sampler: SamplerProtocol,
        block_size: int = 16,
        max_num_seqs: int = 8,
        max_batch_tokens: int = 512,
        max_model_len: int | None = None,
        enable_prefix_cache: bool = True,
        max_cached_blocks: int | None = None,
        chunk_size: int | None = None,
        max_prefill_seqs: int = 1,
        pacer: PrefillPacer | None = None,
        clock: Callable[[], float] = time.perf_counter,
        queue_timeout: float = 0.0,
    ) -> None:
        """`queue_timeout`: seconds a sequence may wait for a slot before it is finished with
        done reason "queue_timeout" (0: no limit); see `Scheduler.expire`."""
        num_blocks = backend.num_cells // block_size
        if num_blocks < 1:
            raise ValueError(f"a KV cache of {backend.num_cells} cells holds no block")
        self.backend = backend
        self.sampler = sampler
        self.block_manager = BlockManager(
            num_blocks,
            block_size,
            backend.num_slots,
            enable_prefix_cache,
            max_cached_blocks,
            low_slots_first=not backend.kv_unified,
            kv_unified=backend.kv_unified,
        )
        # one sequence must fit its slot alone. In a per-slot cache, a pool of every slot's
        # blocks never runs short: a block shared by several slots is counted once but stored
        # in each, and no slot holds more than its share.
        capacity = min(num_blocks * block_size, backend.cells_per_slot)
        self.max_model_len = min(max_model_len or capacity, capacity)
        self.scheduler = Scheduler(
            self.block_manager,
            max_num_seqs,
            max_batch_tokens,
            chunk_size,
            max_prefill_seqs,
            backend.is_end_of_generation,
            queue_timeout,
            context_len=self.max_model_len,  # where a sequence that may shift shifts
        )
        self.pacer = pacer  # None: prompt chunks beside decodes are capped by chunk_size only
        self._clock = clock
        self._ids = itertools.count(1)
        self._pending: list[StepOutput] = []  # outputs for the next step (zero-budget requests)
        self.num_steps = 0
        self.num_kv_cache_full = 0
        self.decode_seconds = 0.0
        self.step_seconds = 0.0

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work or bool(self._pending)

    def add(self, new: NewSequence) -> int:
        """Queue a sequence; returns its id. InvalidRequest if the prompt does not fit.

        Its `constraint` (a grammar) decides which tokens may come; the engine closes it at the end.
        """
        check_prompt(new.prompt_ids, self.max_model_len)
        ends = [(span.start, span.end) for span in new.images]
        if any(a < b for (_, b), (a, _) in itertools.pairwise(ends)) or any(
            start < 0 or end > len(new.prompt_ids) for start, end in ends
        ):
            raise ValueError(f"images at {ends} do not lie in order in the prompt")
        # an image's cells would move or leave with a shift, and its span with them: a
        # sequence with images ends at its context instead
        may_shift = new.shift and self.backend.can_shift and not new.images
        max_tokens = new.max_tokens
        if not may_shift:  # it ends when the context is full
            max_tokens = min(max_tokens, self.max_model_len - len(new.prompt_ids))
        seq = Sequence(
            seq_id=next(self._ids),
            prompt_ids=list(new.prompt_ids),
            params=new.params,
            max_tokens=max_tokens,
            arrival=self._clock(),
            tenant=new.tenant,
            detokenizer=Detokenizer(self.backend.token_bytes, new.params.stop),
            constraint=new.constraint,
            may_shift=may_shift,
            # a shift discards at least one token
            num_keep=max(0, min(new.num_keep, self.max_model_len - 1)),
            images=new.images,
        )
        if any(span.position_base is not None for span in new.images):
            seq.prefix_limit = new.images[0].start  # see Sequence.prefix_limit
        if seq.max_tokens <= 0:  # num_predict 0: nothing to compute
            seq.status = SequenceStatus.FINISHED_LENGTH
            self._pending.append(self._output(seq, self._clock()))
        else:
            self.scheduler.add(seq)
        return seq.seq_id

    def abort(self, seq_id: int) -> StepOutput | None:
        """Cancel a sequence: its cells are released now; returns its final output."""
        seq = self.scheduler.abort(seq_id)
        if seq is None:
            return None
        self._apply(self.scheduler.take_ops())
        return self._output(seq, self._clock())

    def step(self) -> list[StepOutput]:
        """Run one batch; return the outputs of the sequences that got a token or ended."""
        started, decoding = self._clock(), self.decode_seconds
        outputs, self._pending = self._pending, []
        batch = self.scheduler.schedule(True, *self._chunk_limits())
        self._apply(batch.ops)
        if self.scheduler.queue_timeout > 0:  # after admission: a slot that just freed counts
            outputs += [self._output(seq, started) for seq in self.scheduler.expire(started)]
        while batch.items:
            try:
                tokens = self._forward(batch)
            except KVCacheFull as exc:
                log.info("KV cache full, making room: %s", exc)
                outputs += self._make_room(batch)
                batch = self.scheduler.schedule(False, *self._chunk_limits())
                self._apply(batch.ops)
                continue
            except _BackendFault as exc:  # fails this batch's sequences, not the engine
                log.error("decode failed: %s", exc, exc_info=exc.__cause__)
                outputs += self._fail({item.seq for item in batch.items}, exc)
                break
            now = self._clock()
            for seq in self.scheduler.update(batch, tokens.tolist()):
                if seq.first_token_time is None:
                    seq.first_token_time = now
                outputs.append(self._output(seq, now, [seq.output_ids[-1]]))
            break
        self._apply(self.scheduler.take_ops())  # finished sequences' cells go in this step
        self.num_steps += 1
        seconds = self._clock() - started
        self.step_seconds += seconds
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "step %d: %d rows, %d tokens, decode %.1f ms, step %.1f ms",
                self.num_steps,
                len(batch.items),
                batch.num_tokens,
                (self.decode_seconds - decoding) * 1e3,
                seconds * 1e3,
            )
        return outputs

    def _forward(self, batch: ScheduledBatch) -> npt.NDArray[np.integer[Any]]:
        """Decode the batch and sample the rows that want logits."""
        now = self._clock()
        for item in batch.items:
            if item.seq.first_scheduled_time is None:
                item.seq.first_scheduled_time = now
        # llama.cpp's per-slot cache computes a batch in one pass only if its sequences come
        # in increasing, consecutive slots; out of order it splits the batch (and re-reads the
        # weights) at every break
        batch.items.sort(key=lambda item: item.seq.slot or 0)
        if any(item.image is not None for item in batch.items):
            return self._forward_with_images(batch.items)
        return self._forward_tokens(batch.items)

    def _forward_with_images(self, items: list[ScheduledItem]) -> npt.NDArray[np.integer[Any]]:
        """Each image's rows in a decode call of its own, then the token rows in one batch;
        the drawn tokens in the items' order."""
        drawn: dict[int, int] = {}  # item index -> its token
        decoded: list[ScheduledItem] = []
        try:
            for index, item in enumerate(items):
                if item.image is None:
                    continue
                logits = self._decode(functools.partial(self._decode_image, item))
                decoded.append(item)
                if item.want_logits:  # the prompt ends with the image
                    drawn[index] = int(self.sampler.sample(logits, [item.seq])[0])
            texts = [i for i, item in enumerate(items) if item.image is None]
            if texts:
                tokens = self._forward_tokens([items[i] for i in texts]).tolist()
                wanting = (i for i in texts if items[i].want_logits)
                drawn.update(zip(wanting, tokens, strict=True))
        except (KVCacheFull, _BackendFault):
            for item in decoded:  # the batch is scheduled again: its images are not in yet
                self.backend.remove(item.seq.slot or 0, image_position(item)[1], -1)
            raise
        return np.array([drawn[i] for i in sorted(drawn)], dtype=np.int32)

    def _decode_image(self, item: ScheduledItem) -> npt.NDArray[np.float32]:
        """The rest of an image's rows, from `item.start`, at their positions."""
        image, seq = item.image, item.seq
        assert image is not None and seq.slot is not None
        position, _ = image_position(item)
        first = item.start - image.start
        return self.backend.decode_image(seq.slot, image, first, position, item.want_logits)

    def _decode(self, call: Callable[[], npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
        """A backend decode, timed; a backend's failure becomes a _BackendFault."""
        started = self._clock()
        try:
            logits = call()
        except (KVCacheFull, AssertionError):
            raise  # AssertionError: a bookkeeping bug caught by a backend's checks
        except Exception as exc:
            raise _BackendFault(str(exc) or type(exc).__name__) from exc
        self.decode_seconds += self._clock() - started
        return logits

    def _forward_tokens(self, items: list[ScheduledItem]) -> npt.NDArray[np.integer[Any]]:
        """Decode token rows in one batch and sample the rows that want logits."""
        forward = forward_batch(items, self.backend.device_sampling)
        decoding = self.decode_seconds
        logits = self._decode(lambda: self.backend.decode(forward))
        if self.pacer is not None:
            rows = sum(1 for item in items if item.count == 1 and item.want_logits)
            self.pacer.observe(rows, len(forward) - rows, self.decode_seconds - decoding)
        seqs = [item.seq for item in items if item.want_logits]
        if not seqs:
            return np.empty(0, dtype=np.int32)
        drawn = self.backend.sampled_tokens()
        if drawn is None:
            return self.sampler.sample(logits, seqs)
        host = np.flatnonzero(drawn < 0)
        if not len(host):
            return drawn
        tokens = drawn.copy()
        tokens[host] = self.sampler.sample(logits[host], [seqs[i] for i in host.tolist()])
        return tokens

    def _chunk_limits(self) -> tuple[int | None, int]:
        """(prompt tokens beside decode rows, a short prompt's whole size): see pacing."""
        if self.pacer is None:
            return None, 0
        size, rows = self.scheduler.chunk_size, self.scheduler.num_decoding
        return self.pacer.chunk_limit(size, rows), self.pacer.whole_prompt_limit(size, rows)

    def _make_room(self, batch: ScheduledBatch) -> list[StepOutput]:
        """After KVCacheFull: drop cached blocks, else preempt the newest sequence, else fail
        the one sequence left (it cannot fit what the backend really has)."""
        self.num_kv_cache_full += 1
        bs = self.block_manager.block_size
        ops = self.block_manager.evict(-(-batch.num_tokens // bs))
        if ops:
            self._apply(ops)
            return []
        if len(self.scheduler.running) > 1:
            self.scheduler.preempt_newest()
            return []
        error = RuntimeError("the KV cache has no room for this sequence; lower num_ctx")
        return self._fail(set(self.scheduler.running), error)

    def _fail(self, seqs: set[Sequence], exc: Exception) -> list[StepOutput]:
        now = self._clock()
        outputs = []
        for seq in sorted(seqs, key=lambda s: s.seq_id):
            self.scheduler.finish(seq, SequenceStatus.FINISHED_ERROR)
            outputs.append(self._output(seq, now, error=str(exc) or type(exc).__name__))
        self._apply(self.scheduler.take_ops())
        return outputs

    def _apply(self, ops: list[Op]) -> None:
        for op in ops:
            if isinstance(op, Remove):
                self.backend.remove(op.slot, op.start, op.end)
            elif isinstance(op, CopyPrefix):
                self.backend.copy_prefix(op.source, op.destination, op.length)
            elif isinstance(op, Shift):
                self.backend.shift(op.slot, op.start, op.end, op.delta)

    def _output(
        self, seq: Sequence, now: float, token_ids: list[int] | None = None, error: str = ""
    ) -> StepOutput:
        if (
            token_ids
            and not seq.is_finished
            and len(seq.output_ids) > 1
            and seq.params.logprobs < 0
        ):
            # the hot path, a token mid-stream: its text; counts and times come with the last
            return StepOutput(seq.seq_id, seq.new_text, token_ids)
        out = StepOutput(
            seq.seq_id,
            text=seq.new_text if token_ids else "",
            token_ids=token_ids or [],
            error=error,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_cached_tokens=seq.num_cached_tokens,
            num_completion_tokens=seq.num_completion_tokens,
            total_ns=_ns(now - seq.arrival),
        )
        if token_ids and seq.params.logprobs >= 0:
            drawn = self.sampler.take_logprobs(seq.seq_id)
            # an end-of-generation token is no text: OpenAI and Ollama report no entry for it
            if drawn is not None and not self.backend.is_end_of_generation(drawn[0]):
                out.logprobs = [drawn]
        if seq.first_scheduled_time is not None:
            out.queue_ns = _ns(seq.first_scheduled_time - seq.arrival)
        if seq.first_token_time is not None and seq.first_scheduled_time is not None:
            out.prompt_eval_ns = _ns(seq.first_token_time - seq.first_scheduled_time)
            out.eval_ns = _ns(now - seq.first_token_time)
        if seq.is_finished:
            out.finished, out.done_reason = True, seq.done_reason
            out.stop_sequence = seq.detokenizer.matched if seq.detokenizer else ""
            out.all_output_ids = list(seq.output_ids)
            self.sampler.forget(seq.seq_id)
            if seq.constraint is not None:
                seq.constraint.close()
                seq.constraint = None
        return out

    def stats(self) -> dict[str, Any]:
        """Counters for health checks and metrics."""
        bm = self.block_manager
        queried = bm.num_prefix_query_tokens
        return {
            "running": len(self.scheduler.running),
            "waiting": len(self.scheduler.waiting),
            "block_size": bm.block_size,
            "blocks_total": bm.num_blocks,
            "blocks_free": bm.num_free_blocks,
            "blocks_used": bm.num_used_blocks,
            "blocks_cached": bm.num_evictable_blocks,
            "prefix_query_tokens": queried,
            "prefix_hit_tokens": bm.num_prefix_hit_tokens,
            "prefix_hit_rate": bm.num_prefix_hit_tokens / queried if queried else 0.0,
            "preemptions": self.scheduler.num_preemptions,
            "context_shifts": self.scheduler.num_shifts,
            "context_shift_recomputes": self.scheduler.num_shift_recomputes,
            "kv_cache_full": self.num_kv_cache_full,
            "steps": self.num_steps,
            "decode_seconds": self.decode_seconds,
            "step_seconds": self.step_seconds,
            "host_overhead": (self.step_seconds - self.decode_seconds) / self.decode_seconds
            if self.decode_seconds
            else 0.0,
        }


def check_prompt(prompt_ids: list[int], max_model_len: int) -> None:
    """InvalidRequest unless the prompt has a token and leaves room in the context for one more."""
    if not prompt_ids:
        raise InvalidRequest("the prompt is empty after tokenization")
    if len(prompt_ids) >= max_model_len:
        raise InvalidRequest(
            f"the prompt is {len(prompt_ids)} tokens; the context holds {max_model_len}"
        )


class _BackendFault(Exception):
    """The backend's decode raised; only this fails a batch, so an engine bug fails loudly."""


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1e9))
