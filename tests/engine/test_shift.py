"""Context shift on the fake backend: the block manager's accounting, the engine's tokens."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from olla.backends.fake import FakeBackend
from olla.engine.backend import ForwardBatch
from olla.engine.block_manager import BlockManager, Remove, Shift
from olla.engine.engine import Engine
from olla.engine.sampling import SamplingParams
from olla.engine.sequence import NewSequence, Sequence
from tests.engine.test_engine_fake import GREEDY, Greedy, assert_back_to_start, drain

BS = 4
CTX = 64  # the context of a sequence in the engine tests
RNG = random.Random(7)
SYSTEM = [RNG.randrange(3, 60) for _ in range(50)]  # a prefix of 3 blocks of 16 and a bit


def make_seq(seq_id: int, tokens: list[int], keep: int = 2) -> Sequence:
    seq = Sequence(seq_id, list(tokens), SamplingParams(), max_tokens=1000)
    seq.may_shift, seq.num_keep = True, keep
    return seq


def computed(bm: BlockManager, seq: Sequence) -> None:
    seq.num_computed_tokens = seq.num_tokens
    bm.commit(seq)


def grow_to(bm: BlockManager, seq: Sequence, num_tokens: int) -> None:
    """Decode outputs until `seq` has `num_tokens` context tokens, all computed but the last."""
    while seq.num_tokens < num_tokens:
        seq.num_computed_tokens = seq.num_tokens - 1
        bm.append(seq)  # the block of the token fed
        seq.num_computed_tokens += 1
        bm.commit(seq)
        seq.output_ids.append(7)  # the token drawn
    seq.num_computed_tokens = seq.num_tokens - 1


def test_sequence_context_is_the_history_less_one_run_after_the_kept_head() -> None:
    seq = make_seq(1, list(range(10)), keep=2)
    seq.output_ids = [10, 11, 12]
    seq.num_computed_tokens = 12
    assert seq.num_shift_discard == 5  # (12 - 2) // 2
    seq.discard(5)
    assert seq.num_tokens == 8 and seq.num_computed_tokens == 7
    assert seq.tokens(0, 8) == [0, 1, 7, 8, 9, 10, 11, 12]
    assert seq.tokens(1, 3) == [1, 7] and seq.tokens(3, 8) == [8, 9, 10, 11, 12]
    seq.discard(2)  # a second shift discards the tokens right after the head again
    assert seq.tokens(0, seq.num_tokens) == [0, 1, 9, 10, 11, 12]
    assert seq.num_prompt_tokens == 10 and seq.num_completion_tokens == 3  # counts stay whole
    assert seq.last_token == 12 and seq.recent_tokens(3) == [10, 11, 12]


def test_a_private_shift_moves_cells_keeps_refs_and_leaves_the_prefix_cache() -> None:
    bm = BlockManager(num_blocks=16, block_size=BS, num_slots=2)
    seq = make_seq(1, list(range(3, 12)), keep=2)
    bm.allocate(seq)
    computed(bm, seq)
    grow_to(bm, seq, 21)  # 20 computed tokens in 5 full blocks, the 21st to feed
    assert bm.num_cached_blocks == 5
    ops = bm.shift(seq)  # discard (20 - 2) // 2 = 9 after the first 2
    assert ops == [Remove(0, 2, 11), Shift(0, 11, 20, -9)]
    assert seq.num_computed_tokens == 11 and seq.num_tokens == 12
    assert len(seq.block_table) == 3  # 11 computed tokens; the next token's block comes later
    assert bm.num_cached_blocks == 0  # block 0 holds position 2 on: no longer what it was
    assert bm.num_free_blocks == 13
    bm.check()
    bm.append(seq)
    bm.commit(seq)
    assert bm.num_cached_blocks == 0  # and a shifted sequence's blocks are never hashed again
    assert bm.free(seq) == [Remove(0, 0)]
    bm.check()
    assert bm.num_free_blocks == 16


@pytest.mark.parametrize("unified", [True, False], ids=["unified", "per-slot"])
def test_a_shift_beside_a_shared_prefix_keeps_the_other_holders_blocks(unified: bool) -> None:
    bm = BlockManager(num_blocks=32, block_size=BS, num_slots=3, kv_unified=unified)
    prefix = list(range(3, 11))  # two full blocks
    a = make_seq(1, [*prefix, 50, 51], keep=8)
    bm.allocate(a)
    computed(bm, a)
    b = make_seq(2, [*prefix, 60, 61])
    bm.allocate(b)  # shares a's first two blocks
    computed(bm, b)
    shared = a.block_table[:2]
    grow_to(bm, a, 25)
    ops = bm.shift(a)  # keep 8: the shared blocks stay, in place
    assert ops is not None and ops[:2] == [Remove(0, 8, 16), Shift(0, 16, 24, -8)]
    assert a.block_table[:2] == shared == b.block_table[:2]
    assert [bm._blocks[i].ref_count for i in shared] == [2, 2]
    assert bm.num_cached_blocks == 2  # the shared prefix; a's later blocks left the cache
    bm.check()
    bm.free(b)
    bm.free(a)
    bm.check()
    assert bm.num_used_blocks == 0


def test_unified_cells_shared_past_the_kept_head_are_recomputed_not_moved() -> None:
    bm = BlockManager(num_blocks=32, block_size=BS, num_slots=3, kv_unified=True)
    prefix = list(range(3, 15))  # three full blocks
    a = make_seq(1, [*prefix, 50], keep=2)
    bm.allocate(a)
    computed(bm, a)
    b = make_seq(2, [*prefix, 60])
    bm.allocate(b)
    grow_to(bm, a, 17)
    assert bm.shift(a) is None  # b holds a's first 3 blocks: positions 9-11 would move
    assert a.num_discarded == 0 and len(a.block_table) == 4
    bm.check()
    per_slot = BlockManager(num_blocks=32, block_size=BS, num_slots=3, kv_unified=False)
    a2, b2 = make_seq(1, [*prefix, 50], keep=2), make_seq(2, [*prefix, 60])
    per_slot.allocate(a2)
    computed(per_slot, a2)
    per_slot.allocate(b2)
    grow_to(per_slot, a2, 17)
    assert per_slot.shift(a2) is not None  # each slot its own cells: they move
    per_slot.check()
    assert [per_slot._blocks[i].ref_count for i in b2.block_table[:3]] == [1, 1, 1]


def test_unified_a_shared_block_with_the_kept_head_is_replaced_by_a_private_one() -> None:
    bm = BlockManager(num_blocks=32, block_size=BS, num_slots=3, kv_unified=True)
    a = make_seq(1, [3, 4, 5, 6, 50], keep=2)
    bm.allocate(a)
    computed(bm, a)
    b = make_seq(2, [3, 4, 5, 6, 60])
    bm.allocate(b)  # shares a's first block, which holds a's kept head (0-1) and more
    first = b.block_table[0]
    grow_to(bm, a, 17)
    assert bm.shift(a) == [Remove(0, 2, 9), Shift(0, 9, 16, -7)]
    assert a.block_table[0] != first and bm._blocks[first].holders == {1}
    assert bm._blocks[first].hash is not None  # still b's true prefix
    bm.check()
    bm.free(a)
    bm.free(b)
    bm.check()
    assert bm.num_used_blocks == 0


def test_a_preempted_shifted_sequence_comes_back_with_its_context_only() -> None:
    bm = BlockManager(num_blocks=16, block_size=BS, num_slots=2)
    seq = make_seq(1, list(range(3, 20)), keep=4)
    bm.allocate(seq)
    computed(bm, seq)
    grow_to(bm, seq, 25)
    assert bm.shift(seq) is not None
    context = seq.tokens(0, seq.num_tokens)
    bm.free(seq)  # preempted
    seq.num_computed_tokens = 0
    bm.check()
    assert bm.num_cached_blocks == 1  # its first block, all kept head: still a true prefix
    bm.allocate(seq)  # readmitted: blocks for the context, the head from the cache
    assert len(seq.block_table) == -(-len(context) // BS)
    assert seq.num_computed_tokens == 4 and seq.tokens(0, seq.num_tokens) == context
    computed(bm, seq)
    assert bm.num_cached_blocks == 1  # nothing of the shifted context is hashed
    bm.check()


def test_the_fake_backend_moves_a_slots_cells_and_refuses_shared_ones() -> None:
    fake = FakeBackend(num_cells=32, num_slots=2)
    tokens = np.arange(3, 11, dtype=np.int32)
    fake.decode(
        ForwardBatch(
            tokens,
            np.arange(8, dtype=np.int32),
            np.zeros(8, dtype=np.int32),
            np.zeros(8, dtype=bool),
        )
    )
    fake.remove(0, 2, 5)
    fake.shift(0, 5, 8, -3)
    assert fake.slot_tokens(0) == [3, 4, 8, 9, 10]
    fake.copy_prefix(0, 1, 2)
    with pytest.raises(AssertionError, match="shared"):
        fake.shift(0, 0, 2, 1)


# --- the engine ---------------------------------------------------------------------------------


def make_engine(**kwargs: Any) -> Engine:
    backend = {"num_cells": 2048, "num_slots": 8, **kwargs.pop("backend", {})}
    params = {"block_size": 16, "max_num_seqs": 6, "max_batch_tokens": 128, "max_model_len": CTX}
    return Engine(FakeBackend(**backend), Greedy(), **{**params, **kwargs})


def reference(prompt: list[int], max_tokens: int, keep: int = 4, eog_every: int = 0) -> list[int]:
    """The fake model's greedy tokens with Ollama's shift, computed from scratch each token."""
    fake = FakeBackend(num_cells=CTX + 1, num_slots=1, eog_every=eog_every)
    context, out = list(prompt), []
    while len(out) < max_tokens:
        fake.remove(0, 0)
        n = len(context)
        want = np.zeros(n, dtype=bool)
        want[-1] = True
        logits = fake.decode(
            ForwardBatch(
                np.array(context, dtype=np.int32),
                np.arange(n, dtype=np.int32),
                np.zeros(n, dtype=np.int32),
                want,
            )
        )
        out.append(int(logits.argmax()))
        context.append(out[-1])
        if len(context) > CTX:  # the next token's position would be past the context
            computed = len(context) - 1
            del context[keep : keep + max(1, (computed - keep) // 2)]
    return out


def generate(engine: Engine, news: list[NewSequence]) -> tuple[list[list[int]], list[str | None]]:
    ids = [engine.add(new) for new in news]
    tokens: dict[int, list[int]] = {i: [] for i in ids}
    reasons: dict[int, str | None] = {}
    for out in drain(engine):
        tokens[out.seq_id] += out.token_ids
        if out.finished:
            reasons[out.seq_id] = out.done_reason
            assert out.num_completion_tokens == len(tokens[out.seq_id])
    return [tokens[i] for i in ids], [reasons[i] for i in ids]


def shifting(prompt: list[int], max_tokens: int, keep: int = 4) -> NewSequence:
    return NewSequence(prompt, GREEDY, max_tokens, shift=True, num_keep=keep)


def test_a_sequence_passes_its_context_by_shifting_and_reaches_its_budget() -> None:
    engine = make_engine()
    prompt = SYSTEM[:20]
    (tokens,), (reason,) = generate(engine, [shifting(prompt, 200)])
    assert reason == "length" and len(tokens) == 200
    assert tokens == reference(prompt, 200)
    assert engine.scheduler.num_shifts >= 5 and engine.scheduler.num_shift_recomputes == 0
    assert_back_to_start(engine)


def test_without_shift_or_where_the_cache_cannot_shift_it_ends_at_the_context() -> None:
    prompt = SYSTEM[:20]
    for engine, new in [
        (make_engine(), NewSequence(prompt, GREEDY, 200)),
        (make_engine(backend={"can_shift": False}), shifting(prompt, 200)),
    ]:
        (tokens,), (reason,) = generate(engine, [new])
        assert reason == "length" and len(tokens) == CTX - len(prompt)
        assert tokens == reference(prompt, 200)[: len(tokens)]
        assert engine.scheduler.num_shifts == 0


@pytest.mark.parametrize("unified", [True, False], ids=["unified", "per-slot"])
def test_shifting_streams_in_batches_match_each_alone(unified: bool) -> None:
    """A shared system prompt (3 blocks: over num_keep + half the context, so the unified
    cache recomputes), shifts at different steps, keeps of 0, 4 and 20 tokens."""
    news = [
        shifting([*SYSTEM, 5, 6], 150),
        shifting([*SYSTEM, 7], 90, keep=20),
        NewSequence([*SYSTEM[:16], 8, 9], GREEDY, 100),  # no shift: ends at the context
        shifting(SYSTEM[:10], 120, keep=0),
        shifting([*SYSTEM[:33], 3], 70),
    ]
    layout = {} if unified else {"backend": {"num_cells": 8 * CTX, "kv_unified": False}}
    engine = make_engine(**layout)
    together, reasons = generate(engine, news)
    assert reasons == ["length"] * 5
    for new, tokens in zip(news, together, strict=True):
        alone = generate(make_engine(**layout), [new])[0][0]
        assert tokens == alone
        assert tokens == reference(new.prompt_ids, len(tokens), new.num_keep)
    assert engine.stats()["prefix_hit_tokens"] > 0
    assert (engine.scheduler.num_shift_recomputes > 0) == unified
    assert_back_to_start(engine)


def test_shifted_sequences_preempted_for_room_recompute_their_context() -> None:
    # 7 blocks of 16 (unified) for a stream that ends at the context (4 blocks) and a newer one
    # that shifts: when both need their fourth block, the newer, shifted one is preempted
    engine = make_engine(backend={"num_cells": 7 * 16, "num_slots": 3}, max_num_seqs=2)
    news = [NewSequence(SYSTEM[:8], GREEDY, 200), shifting([*SYSTEM[10:], 3], 150)]
    ids = [engine.add(new) for new in news]
    tokens: dict[int, list[int]] = {i: [] for i in ids}
    preempted_shifted = set()
    while engine.has_work:
        for out in engine.step():
            tokens[out.seq_id] += out.token_ids
            assert not out.finished or out.done_reason == "length"
        engine.block_manager.check()
        waiting = engine.scheduler.waiting
        preempted_shifted |= {s.seq_id for s in waiting if s.num_discarded and s.admitted}
    assert preempted_shifted == {ids[1]}, engine.stats()
    assert [len(tokens[i]) for i in ids] == [CTX - 8, 150]
    for new, seq_id in zip(news, ids, strict=True):
        assert tokens[seq_id] == reference(new.prompt_ids, len(tokens[seq_id]), new.num_keep)
    assert_back_to_start(engine)


@pytest.mark.parametrize("seed", range(3))
def test_random_shifting_traffic_keeps_the_accounting_exact(seed: int) -> None:
    rng = random.Random(seed)
    engine = make_engine(
        backend={"num_cells": 4 * CTX, "num_slots": 10, "eog_every": 90}, max_num_seqs=6
    )
    expected: dict[int, tuple[NewSequence, list[int]]] = {}
    cancelled: set[int] = set()
    for _ in range(400):
        if rng.random() < 0.15 or not engine.has_work:
            prompt = SYSTEM[: rng.choice([0, 16, 20, 40, 48])] + [rng.randrange(3, 60)]
            prompt += [rng.randrange(3, 60) for _ in range(rng.randint(0, 20))]
            prompt = prompt[:60]  # 3 shared blocks reach past any kept head + half of 64
            new = NewSequence(
                prompt,
                GREEDY,
                rng.randint(1, 160),
                shift=rng.random() < 0.8,
                num_keep=rng.choice([0, 4, 16, 20]),
            )
            expected[engine.add(new)] = (new, [])
        if rng.random() < 0.02 and engine.scheduler.running:
            victim = rng.choice(engine.scheduler.running).seq_id
            engine.abort(victim)
            cancelled.add(victim)
        for out in engine.step():
            expected[out.seq_id][1].extend(out.token_ids)
        engine.block_manager.check()
    for out in drain(engine):
        expected[out.seq_id][1].extend(out.token_ids)
    assert_back_to_start(engine)
    stats = engine.stats()  # shifts in place, and preemptions, of shifted ones among others
    assert stats["context_shifts"] > stats["context_shift_recomputes"]
    assert stats["preemptions"] > stats["context_shift_recomputes"]
    for seq_id, (new, tokens) in expected.items():
        if seq_id not in cancelled:
            want = reference(new.prompt_ids, len(tokens), new.num_keep, eog_every=90)
            assert tokens == want, seq_id


def test_a_shifted_sequence_keeps_its_whole_output_for_counts_and_stops() -> None:
    engine = make_engine()
    seq_id = engine.add(shifting(SYSTEM[:20], 120))
    outputs = drain(engine)
    final = outputs[-1]
    assert final.seq_id == seq_id and final.finished
    assert final.num_prompt_tokens == 20 and final.num_completion_tokens == 120
    assert len(final.all_output_ids) == 120
    assert final.done_reason == "length"
    assert_back_to_start(engine)
