"""BlockManager: counts, ref counts, chained-hash prefix hits, LRU eviction, emitted cache ops."""

from __future__ import annotations

import random

import numpy as np
import pytest

from olla.backends.fake import FakeBackend
from olla.engine.backend import ForwardBatch
from olla.engine.block_manager import BlockManager, CopyPrefix, Op, Remove
from olla.engine.sampling import SamplingParams
from olla.engine.sequence import Sequence

BS = 4


def make_seq(seq_id: int, tokens: list[int] | range) -> Sequence:
    return Sequence(seq_id, list(tokens), SamplingParams(), max_tokens=100)


def computed(bm: BlockManager, seq: Sequence) -> Sequence:
    """As if the model had computed every token of `seq`."""
    seq.num_computed_tokens = seq.num_tokens
    bm.commit(seq)
    return seq


def counts(bm: BlockManager) -> tuple[int, int, int]:
    bm.check()
    return bm.num_free_blocks, bm.num_used_blocks, bm.num_evictable_blocks


def ref_counts(bm: BlockManager, seq: Sequence) -> list[int]:
    return [bm._blocks[b].ref_count for b in seq.block_table]


def test_allocate_and_free_count_blocks_and_keep_full_ones_cached() -> None:
    bm = BlockManager(num_blocks=8, block_size=BS, num_slots=4)
    a = make_seq(1, range(10))  # 2 full blocks and a partial one
    assert bm.can_allocate(a)
    assert bm.allocate(a) == []
    assert (a.slot, len(a.block_table), a.num_computed_tokens) == (0, 3, 0)
    assert counts(bm) == (5, 3, 0)
    computed(bm, a)
    assert bm.num_cached_blocks == 2  # the partial block is not cached
    assert bm.free(a) == [Remove(0, 8)]  # its partial block's cells go at once
    assert counts(bm) == (6, 0, 2)
    assert a.slot is None and a.block_table == []


def test_cannot_allocate_without_blocks_or_without_an_idle_slot() -> None:
    bm = BlockManager(num_blocks=4, block_size=BS, num_slots=1)
    assert not bm.can_allocate(make_seq(1, range(17)))  # needs 5 blocks
    a = make_seq(2, range(4))
    bm.allocate(a)
    assert not bm.can_allocate(make_seq(3, range(4)))  # blocks left, but no slot


def test_shared_prefix_blocks_are_ref_counted_and_copied_into_a_new_slot() -> None:
    bm = BlockManager(num_blocks=16, block_size=BS, num_slots=4)
    a = computed(bm, make_seq(1, range(13)))
    bm.allocate(a)
    computed(bm, a)  # a keeps running
    b = make_seq(2, [*range(8), 50, 51, 52, 53, 54])
    assert bm.allocate(b) == [CopyPrefix(0, 1, 8)]
    assert b.block_table[:2] == a.block_table[:2] and b.block_table[2] != a.block_table[2]
    assert (b.num_computed_tokens, b.num_cached_tokens) == (8, 8)
    assert ref_counts(bm, a) == [2, 2, 1, 1]
    assert bm.free(a) == [Remove(0, 12)]
    assert ref_counts(bm, b) == [1, 1, 1, 1]
    assert counts(bm) == (11, 4, 1)  # a's third block: cached, held by idle slot 0
    assert bm.free(b) == [Remove(1, 8)]  # b computed nothing of its own
    assert counts(bm) == (13, 0, 3)


def test_chained_hashes_hit_only_a_common_leading_run_of_blocks() -> None:
    bm = BlockManager(num_blocks=32, block_size=BS, num_slots=4)
    base = list(range(100, 112))  # 3 full blocks
    a = make_seq(1, [*base, 1, 2])
    bm.allocate(a)
    bm.free(computed(bm, a))
    b = make_seq(2, [*base, 7, 7, 7])
    bm.allocate(b)
    assert b.num_cached_tokens == 12
    c = make_seq(3, [0, 0, 0, 0, *base[4:], 5])  # only the first block differs
    bm.allocate(c)
    assert c.num_cached_tokens == 0
    d = make_seq(4, base)  # all cached: its last block is computed again, for its logits
    bm.allocate(d)
    assert (d.num_cached_tokens, d.num_computed_tokens) == (8, 8)
    assert bm.num_prefix_query_tokens == 14 + 15 + 13 + 12
    assert bm.num_prefix_hit_tokens == 12 + 0 + 8


def test_output_tokens_fill_blocks_that_a_follow_up_prompt_hits() -> None:
    bm = BlockManager(num_blocks=32, block_size=BS, num_slots=4)
    a = make_seq(1, range(6))
    bm.allocate(a)
    for token in range(50, 56):  # six generated tokens, each computed by the next step
        computed(bm, a)
        a.output_ids.append(token)
        bm.append(a)
    bm.free(a)
    follow_up = make_seq(2, [*a.all_ids, 9, 9, 9])
    assert bm.allocate(follow_up) == []  # slot 0 holds the history already
    assert (follow_up.slot, follow_up.num_cached_tokens) == (0, 8)


def test_the_prefix_cache_can_be_disabled() -> None:
    bm = BlockManager(num_blocks=16, block_size=BS, num_slots=4, enable_prefix_cache=False)
    a = make_seq(1, range(9))
    bm.allocate(a)
    assert bm.free(computed(bm, a)) == [Remove(0, 0)]
    b = make_seq(2, range(9))
    assert bm.allocate(b) == [] and b.num_cached_tokens == 0
    assert counts(bm) == (13, 3, 0)


def test_least_recently_used_cached_blocks_are_evicted_first_deepest_first() -> None:
    bm = BlockManager(num_blocks=6, block_size=BS, num_slots=4)
    a, b = make_seq(1, [1] * 9), make_seq(2, [2] * 9)
    for seq in (a, b):
        bm.allocate(seq)
        bm.free(computed(bm, seq))
    assert counts(bm) == (2, 0, 4)  # slot 0 holds a's 2 full blocks, slot 1 b's
    c = make_seq(3, [3] * 16)  # 4 blocks: the 2 free ones, then a's two
    assert bm.allocate(c) == [Remove(0, 4), Remove(0, 0)]  # a's second block goes first
    assert c.slot == 2  # an empty slot, rather than clearing one that holds a cache
    bm.free(c)
    miss_a, hit_b = make_seq(4, [1] * 9), make_seq(5, [2] * 9)
    for seq in (miss_a, hit_b):
        bm.allocate(seq)
    assert (miss_a.num_cached_tokens, hit_b.num_cached_tokens) == (0, 8)


def test_cached_blocks_beyond_the_cap_are_evicted_when_freed() -> None:
    bm = BlockManager(num_blocks=8, block_size=BS, num_slots=4, max_evictable_blocks=3)
    a, b = make_seq(1, [1] * 9), make_seq(2, [2] * 9)
    bm.allocate(a)
    assert bm.free(computed(bm, a)) == [Remove(0, 8)]  # only the partial block's cells go
    bm.allocate(b)
    assert bm.free(computed(bm, b)) == [Remove(1, 8), Remove(0, 4)]  # then a's oldest, deepest
    assert counts(bm) == (5, 0, 3)
    assert bm.allocate(make_seq(3, [2] * 9)) == []  # b's blocks still hit in its own slot


def test_a_hit_makes_cached_blocks_most_recently_used() -> None:
    bm = BlockManager(num_blocks=5, block_size=BS, num_slots=4)
    a, b = make_seq(1, [1] * 5), make_seq(2, [2] * 5)
    for seq in (a, b):
        bm.allocate(seq)
        bm.free(computed(bm, seq))
    again = make_seq(3, [1] * 5)  # hits a's block, which becomes the most recent
    bm.allocate(again)
    bm.free(again)
    c = make_seq(4, [3] * 16)  # 3 free blocks and one evicted: b's
    assert bm.allocate(c) == [Remove(1, 0)]


def test_admission_into_the_idle_slot_that_holds_the_prefix_needs_no_copy() -> None:
    bm = BlockManager(num_blocks=16, block_size=BS, num_slots=2)
    a = make_seq(1, range(13))
    bm.allocate(a)
    bm.free(computed(bm, a))  # slot 0 keeps 3 full blocks
    b = make_seq(2, [*range(8), 40, 41, 42, 43, 44])
    assert bm.allocate(b) == [Remove(0, 8)]  # only a's third block is dropped from the slot
    assert b.slot == 0 and b.num_computed_tokens == 8
    assert bm.num_cached_blocks == 2  # a's third block had no other holder: freed


def test_admission_into_a_cleared_slot_copies_the_prefix_from_a_holder() -> None:
    bm = BlockManager(num_blocks=16, block_size=BS, num_slots=2)
    x = make_seq(1, [90] * 9)
    bm.allocate(x)
    bm.free(computed(bm, x))  # slot 0: idle, holds x's 2 full blocks
    a = make_seq(2, range(13))
    bm.allocate(a)
    computed(bm, a)  # slot 1, running
    b = make_seq(3, [*range(8), 40, 41])
    assert bm.allocate(b) == [Remove(0, 0), CopyPrefix(1, 0, 8)]
    assert b.slot == 0 and bm.num_cached_blocks == 3  # x's blocks went with the clearing


def test_evicting_a_block_removes_its_cells_from_every_holder() -> None:
    bm = BlockManager(num_blocks=5, block_size=BS, num_slots=3)
    a = make_seq(1, range(9))
    bm.allocate(a)
    computed(bm, a)
    b = make_seq(2, range(9))
    assert bm.allocate(b) == [CopyPrefix(0, 1, 8)]
    assert bm.free(a) == [Remove(0, 8)]
    assert bm.free(b) == [Remove(1, 8)]
    assert counts(bm) == (3, 0, 2)  # both slots hold both cached blocks
    c = make_seq(3, [50] * 13)  # needs 4 blocks: the 3 free ones and the LRU cached one
    assert bm.allocate(c) == [Remove(0, 4), Remove(1, 4)]
    assert counts(bm) == (0, 4, 1)


def test_evict_frees_cached_blocks_on_demand() -> None:
    bm = BlockManager(num_blocks=6, block_size=BS, num_slots=2)
    a = make_seq(1, range(17))
    bm.allocate(a)
    bm.free(computed(bm, a))
    assert counts(bm) == (2, 0, 4)
    assert bm.evict(1) == [Remove(0, 12)]
    assert bm.evict(10) == [Remove(0, 8), Remove(0, 4), Remove(0, 0)]
    assert counts(bm) == (6, 0, 0) and bm.evict(1) == []


def _apply(backend: FakeBackend, ops: list[Op]) -> None:
    for op in ops:
        if isinstance(op, Remove):
            backend.remove(op.slot, op.start)
        else:
            backend.copy_prefix(op.source, op.destination, op.length)


def _compute(backend: FakeBackend, seq: Sequence, count: int) -> None:
    start, slot = seq.num_computed_tokens, seq.slot
    assert slot is not None
    tokens = np.array(seq.tokens(start, start + count), dtype=np.int32)
    positions = np.arange(start, start + count, dtype=np.int32)
    backend.decode(
        ForwardBatch(tokens, positions, np.full(count, slot, np.int32), np.zeros(count, bool))
    )
    seq.num_computed_tokens += count


@pytest.mark.parametrize("seed", range(6))
def test_random_workload_keeps_cells_and_blocks_consistent(seed: int) -> None:
    """Ops applied to the fake must give every running slot exactly its sequence's tokens."""
    rng = random.Random(seed)
    bm = BlockManager(num_blocks=24, block_size=BS, num_slots=6)
    backend = FakeBackend(num_cells=24 * BS, num_slots=6)
    histories = [[rng.randrange(3, 60) for _ in range(rng.randrange(0, 14))] for _ in range(3)]
    running: list[Sequence] = []
    for seq_id in range(400):
        roll = rng.random()
        if roll < 0.25:
            prefix = rng.choice(histories)
            seq = make_seq(
                seq_id, prefix + [rng.randrange(3, 60) for _ in range(rng.randint(1, 9))]
            )
            if bm.can_allocate(seq):
                _apply(backend, bm.allocate(seq))
                running.append(seq)
        elif roll < 0.85 and running:
            seq = rng.choice(running)
            if seq.num_computed_tokens == seq.num_tokens:
                seq.output_ids.append(rng.randrange(3, 60))  # sampled; computed next
            count = min(rng.randint(1, 6), seq.num_tokens - seq.num_computed_tokens)
            if bm.can_append(seq, count):
                _apply(backend, bm.append(seq, count))
                _compute(backend, seq, count)
                bm.commit(seq)
        elif running:
            seq = running.pop(rng.randrange(len(running)))
            _apply(backend, bm.free(seq))
            histories.append(seq.tokens(0, seq.num_computed_tokens))
        bm.check()
        for seq in running:
            assert seq.slot is not None
            assert backend.slot_tokens(seq.slot) == seq.tokens(0, seq.num_computed_tokens)
        assert backend.num_used_cells <= (bm.num_used_blocks + bm.num_evictable_blocks) * BS
    for seq in running:
        _apply(backend, bm.free(seq))
    assert counts(bm) == (bm.num_blocks - bm.num_evictable_blocks, 0, bm.num_evictable_blocks)
    assert backend.num_used_cells == bm.num_evictable_blocks * BS  # exact: cached cells only
    assert bm.num_prefix_hit_tokens > 0


@pytest.mark.parametrize("low_slots_first", [False, True])
def test_a_new_sequence_without_hits_takes_an_empty_slot_or_the_lowest(
    low_slots_first: bool,
) -> None:
    bm = BlockManager(num_blocks=32, block_size=BS, num_slots=4, low_slots_first=low_slots_first)
    seqs = [make_seq(i, range(10 * i, 10 * i + 8)) for i in range(3)]
    for seq in seqs:
        bm.allocate(seq)
    assert [seq.slot for seq in seqs] == [0, 1, 2]
    for seq in reversed(seqs[:2]):  # slots 1 and 0 go idle with cached blocks
        bm.free(computed(bm, seq))
    newcomer = make_seq(9, range(100, 108))
    bm.allocate(newcomer)
    # the lowest slot keeps a per-slot cache's running slots consecutive; otherwise slot 3,
    # empty, is taken and the cached prefixes are kept
    assert newcomer.slot == (0 if low_slots_first else 3)
    bm.check()
