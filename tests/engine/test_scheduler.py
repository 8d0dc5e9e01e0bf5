"""Scheduler as pure bookkeeping: batches built by hand-fed steps, no backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from olla.engine.block_manager import BlockManager, Remove
from olla.engine.detokenizer import Detokenizer
from olla.engine.sampling import SamplingParams
from olla.engine.scheduler import ScheduledBatch, Scheduler
from olla.engine.sequence import Sequence, SequenceStatus

BS = 4
EOG = 0
Row = tuple[int, int, int, bool]


def make(num_blocks: int = 32, max_num_seqs: int = 4, **kwargs: int) -> Scheduler:
    bm = BlockManager(num_blocks, BS, num_slots=max_num_seqs + 2)
    params = {"max_batch_tokens": 64, **kwargs}
    return Scheduler(bm, max_num_seqs, is_end_of_generation=lambda t: t == EOG, **params)


def add(
    sched: Scheduler, seq_id: int, prompt: list[int] | range, max_tokens: int = 4, stop: str = ""
) -> Sequence:
    stops = (stop,) if stop else ()
    seq = Sequence(
        seq_id,
        list(prompt),
        SamplingParams(stop=stops),
        max_tokens,
        arrival=float(seq_id),
        detokenizer=Detokenizer(lambda t: f"<{t}>".encode(), stops),
    )
    sched.add(seq)
    return seq


def step(
    sched: Scheduler, token: Callable[[Sequence], int] = lambda seq: 7
) -> tuple[list[Row], list[Sequence]]:
    """Schedule, 'sample' a token for each row that wants one, fold back."""
    batch = sched.schedule()
    sampled = [token(item.seq) for item in batch.items if item.want_logits]
    return rows(batch), sched.update(batch, sampled)


def rows(batch: ScheduledBatch) -> list[Row]:
    return [(i.seq.seq_id, i.start, i.count, i.want_logits) for i in batch.items]


def ids(seqs: object) -> list[int]:
    return [s.seq_id for s in seqs]  # type: ignore[attr-defined]


def test_a_running_stream_gets_a_token_every_step_while_a_long_prompt_is_chunked() -> None:
    sched = make(max_batch_tokens=8)
    a = add(sched, 1, range(3), max_tokens=10)
    assert step(sched)[0] == [(1, 0, 3, True)]
    add(sched, 2, range(20))
    assert step(sched)[0] == [(1, 3, 1, True), (2, 0, 7, False)]
    assert step(sched)[0] == [(1, 4, 1, True), (2, 7, 7, False)]
    batch, updated = step(sched)
    assert batch == [(1, 5, 1, True), (2, 14, 6, True)]  # the last chunk: logits, a token
    assert ids(updated) == [1, 2]
    assert step(sched)[0] == [(1, 6, 1, True), (2, 20, 1, True)]
    assert a.num_completion_tokens == 5


def test_chunk_size_caps_each_prefill_chunk() -> None:
    sched = make(max_batch_tokens=64, chunk_size=5)
    add(sched, 1, range(12))
    assert [step(sched)[0] for _ in range(3)] == [
        [(1, 0, 5, False)],
        [(1, 5, 5, False)],
        [(1, 10, 2, True)],
    ]


def test_chunk_limit_caps_prompt_tokens_only_beside_decode_rows() -> None:
    sched = make(max_batch_tokens=64)
    add(sched, 1, range(3), max_tokens=10)
    assert rows(sched.schedule(chunk_limit=2)) == [(1, 0, 3, True)]  # no decode rows: no cap
    sched.running[0].num_computed_tokens = 3
    sched.running[0].output_ids.append(7)
    add(sched, 2, range(20))
    batch = sched.schedule(chunk_limit=5)
    assert rows(batch) == [(1, 3, 1, True), (2, 0, 5, False)]
    sched.update(batch, [7])
    assert rows(sched.schedule(chunk_limit=0)) == [(1, 4, 1, True), (2, 5, 1, False)]


def test_a_short_remainder_goes_in_whole_beside_decode_rows() -> None:
    sched = make(max_batch_tokens=64)
    add(sched, 1, range(3), max_tokens=10)
    step(sched)
    add(sched, 2, range(12))
    assert rows(sched.schedule(chunk_limit=4, whole_prompt_limit=12)) == [
        (1, 3, 1, True),
        (2, 0, 12, True),
    ]


def test_one_multi_token_chunk_per_batch_unless_told_otherwise() -> None:
    sched = make()
    add(sched, 1, range(6))
    add(sched, 2, range(10, 16))
    assert step(sched)[0] == [(1, 0, 6, True)]
    assert step(sched)[0] == [(1, 6, 1, True), (2, 0, 6, True)]
    sched = make(max_prefill_seqs=2)
    add(sched, 1, range(6))
    add(sched, 2, range(10, 16))
    assert step(sched)[0] == [(1, 0, 6, True), (2, 0, 6, True)]


def test_running_prefills_also_respect_the_chunks_per_batch() -> None:
    sched = make(max_prefill_seqs=2, chunk_size=4)
    add(sched, 1, range(10))
    add(sched, 2, range(10, 20))
    assert step(sched)[0] == [(1, 0, 4, False), (2, 0, 4, False)]
    sched.max_prefill_seqs = 1
    assert step(sched)[0] == [(1, 4, 4, False)]


def test_max_num_seqs_bounds_the_running_set() -> None:
    sched = make(max_num_seqs=2, max_prefill_seqs=4)
    for seq_id in range(1, 4):
        add(sched, seq_id, [seq_id] * 3)
    step(sched)
    assert ids(sched.running) == [1, 2] and ids(sched.waiting) == [3]


def test_a_sequence_waits_for_blocks_and_is_admitted_when_another_finishes() -> None:
    sched = make(num_blocks=6)
    a = add(sched, 1, range(16), max_tokens=2)  # 4 blocks, then a 5th for its second token
    b = add(sched, 2, range(50, 62))  # 3 blocks
    assert step(sched)[0] == [(1, 0, 16, True)]
    assert ids(sched.waiting) == [2] and b.status == SequenceStatus.WAITING
    batch, updated = step(sched)
    assert batch == [(1, 16, 1, True)] and updated == [a]
    assert a.status == SequenceStatus.FINISHED_LENGTH and b.status == SequenceStatus.WAITING
    assert sched.take_ops() == [Remove(a.slot or 0, 16)]  # freed in the same step
    bm = sched.block_manager
    assert (bm.num_used_blocks, bm.num_evictable_blocks) == (0, 4)
    assert step(sched)[0] == [(2, 0, 12, True)]
    assert ids(sched.running) == [2] and not sched.waiting


def test_out_of_blocks_preempts_the_newest_and_requeues_it_first() -> None:
    sched = make(num_blocks=4, max_num_seqs=3, max_prefill_seqs=3)
    a, b, c = (add(sched, i, [i] * 4, max_tokens=3) for i in (1, 2, 3))
    assert len(step(sched)[0]) == 3  # one block each; each now needs a second one
    add(sched, 4, [4] * 4)
    batch, _ = step(sched)
    assert batch == [(1, 4, 1, True), (2, 4, 1, True)]
    assert c.status == SequenceStatus.PREEMPTED and ids(sched.waiting) == [3, 4]
    assert (c.num_computed_tokens, c.output_ids) == (0, [7])  # its output is kept
    assert sched.num_preemptions == 1
    token = iter(range(20, 40))
    while c.status != SequenceStatus.RUNNING:
        batch, _ = step(sched, lambda seq: next(token))
    assert batch[0] == (3, 0, 5, True)  # prompt and output recomputed, then sampled
    assert (c.num_completion_tokens, c.max_tokens) == (2, 3)  # the budget goes on
    assert a.is_finished and b.is_finished


def test_preemption_picks_the_latest_arrival_not_the_latest_admission() -> None:
    sched = make(num_blocks=4, max_prefill_seqs=3)
    a, b, c = (add(sched, i, [i] * 4, max_tokens=3) for i in (1, 2, 3))
    step(sched)
    a.arrival = 9.0  # as if a had been preempted before and re-admitted
    step(sched)
    assert a.status == SequenceStatus.PREEMPTED and ids(sched.waiting) == [1]


def test_cancel_frees_blocks_at_once() -> None:
    sched = make()
    a = add(sched, 1, range(6))
    b = add(sched, 2, range(6))
    step(sched)
    slot = a.slot
    assert sched.abort(1) is a and a.status == SequenceStatus.FINISHED_ABORTED
    assert sched.block_manager.num_used_blocks == 0
    assert sched.take_ops() == [Remove(slot or 0, 4)]
    assert sched.abort(2) is b and not sched.waiting and not sched.has_work
    assert sched.abort(1) is None and sched.abort(99) is None


def test_prefix_hits_are_counted_and_skip_computation() -> None:
    sched = make()
    add(sched, 1, range(12), max_tokens=1)
    step(sched)
    b = add(sched, 2, [*range(8), 40, 41])
    assert step(sched)[0] == [(2, 8, 2, True)]
    assert b.num_cached_tokens == 8
    assert sched.block_manager.num_prefix_hit_tokens == 8


def test_end_of_generation_stops_with_no_text() -> None:
    sched = make()
    seq = add(sched, 1, range(3), max_tokens=10)
    step(sched, lambda s: 5)
    _, updated = step(sched, lambda s: EOG)
    assert updated == [seq] and seq.status == SequenceStatus.FINISHED_STOPPED
    assert seq.new_text == "" and seq.output_ids == [5, EOG] and seq.done_reason == "stop"


def test_a_stop_string_ends_the_sequence_and_is_not_released() -> None:
    sched = make()
    seq = add(sched, 1, range(3), max_tokens=10, stop="<6><5>")
    texts = []
    for token in (5, 6, 6, 7, 6, 5):
        assert not seq.is_finished
        step(sched, lambda s, t=token: t)  # type: ignore[misc]
        texts.append(seq.new_text)
    assert texts == ["<5>", "", "<6>", "<6><7>", "", ""]  # "<6>" held while it may be the stop
    assert seq.status == SequenceStatus.FINISHED_STOPPED and not sched.has_work


@pytest.mark.parametrize("max_tokens", [1, 3])
def test_the_completion_budget_ends_with_length_and_releases_held_text(max_tokens: int) -> None:
    sched = make()
    seq = add(sched, 1, range(3), max_tokens=max_tokens, stop="<7>!")
    for _ in range(max_tokens):
        step(sched)
    assert seq.status == SequenceStatus.FINISHED_LENGTH and seq.done_reason == "length"
    # the last "<7>" was held back as a possible stop string, and is released at the end
    assert seq.new_text == "<7>" * min(max_tokens, 2)
    assert not sched.has_work


def test_configuration_is_checked() -> None:
    bm = BlockManager(8, BS, num_slots=2)
    with pytest.raises(ValueError, match="slots"):
        Scheduler(bm, max_num_seqs=3, max_batch_tokens=64)
    with pytest.raises(ValueError, match="max_batch_tokens"):
        Scheduler(bm, max_num_seqs=2, max_batch_tokens=1)


def test_a_sequence_never_admitted_expires_after_the_queue_timeout() -> None:
    sched = make(max_num_seqs=1, queue_timeout=10)
    a = add(sched, 1, range(3), max_tokens=10)  # arrives at 1.0 (add's arrival is its id)
    b = add(sched, 2, range(3))  # at 2.0
    c = add(sched, 3, range(3))  # at 3.0
    step(sched)  # a takes the only sequence; b and c wait
    free = sched.block_manager.num_free_blocks
    assert sched.expire(now=11.9) == []  # b has waited 9.9 s
    assert sched.expire(now=12.0) == [b]
    assert b.status == SequenceStatus.FINISHED_QUEUE_TIMEOUT and b.done_reason == "queue_timeout"
    assert ids(sched.waiting) == [3] and sched.running == [a]
    assert sched.expire(now=20.0) == [c] and not sched.waiting
    assert sched.block_manager.num_free_blocks == free  # they held nothing
    assert sched.abort(2) is None  # gone from the scheduler
    assert step(sched)[0] == [(1, 3, 1, True)]  # a goes on


def test_a_sequence_that_has_run_is_never_expired() -> None:
    sched = make(num_blocks=4, max_num_seqs=3, max_prefill_seqs=3, queue_timeout=5)
    a, b, c = (add(sched, i, [i] * 4, max_tokens=3) for i in (1, 2, 3))
    step(sched)
    add(sched, 4, [4] * 4)
    step(sched)  # out of blocks: c is preempted and waits first, then 4
    assert c.status == SequenceStatus.PREEMPTED and ids(sched.waiting) == [3, 4]
    assert ids(sched.expire(now=100.0)) == [4]  # never admitted; c has run and keeps its place
    assert ids(sched.waiting) == [3]


def test_a_sequence_sent_back_to_share_its_slot_is_never_expired() -> None:
    sched = make(max_num_seqs=2, max_prefill_seqs=2, queue_timeout=5)
    flood = [add(sched, i, range(3), max_tokens=10) for i in (1, 2)]
    for seq in flood:
        seq.tenant = "flood"
    step(sched)
    bob = add(sched, 3, range(3))
    bob.tenant = "bob"
    step(sched)  # flood's newest gives its slot up to bob, and waits again
    assert flood[1].status == SequenceStatus.WAITING and bob.status == SequenceStatus.RUNNING
    assert sched.expire(now=100.0) == [] and ids(sched.waiting) == [2]


def test_without_a_queue_timeout_nothing_expires() -> None:
    sched = make(max_num_seqs=1)
    add(sched, 1, range(3), max_tokens=10)
    add(sched, 2, range(3))
    step(sched)
    assert sched.expire(now=1e9) == [] and ids(sched.waiting) == [2]
