"""The fake backend is strict where llama.cpp would silently compute garbage."""

from __future__ import annotations

import numpy as np
import pytest

from olla.backends.fake import FakeBackend
from olla.engine.backend import ForwardBatch, KVCacheFull


def batch(rows: list[tuple[int, int, int]], want_last: bool = True) -> ForwardBatch:
    """Rows of (token, position, slot); logits for the last row only."""
    tokens, positions, slots = (np.array(col, dtype=np.int32) for col in zip(*rows, strict=True))
    want = np.zeros(len(rows), dtype=bool)
    want[-1] = want_last
    return ForwardBatch(tokens, positions, slots, want)


def prefill(backend: FakeBackend, slot: int, tokens: list[int]) -> int:
    """Feed `tokens` to `slot` from position 0; the argmax of the last row."""
    logits = backend.decode(batch([(t, p, slot) for p, t in enumerate(tokens)]))
    return int(logits.argmax(axis=1)[0])


def test_rows_must_continue_their_slot_exactly() -> None:
    backend = FakeBackend(num_cells=64, num_slots=2)
    prefill(backend, 0, [5, 6, 7])
    for wrong in ([(8, 4, 0)], [(8, 2, 0)], [(8, 1, 1)], [(8, 3, 0), (9, 5, 0)]):
        with pytest.raises(AssertionError, match="slot"):
            backend.decode(batch(wrong))
    backend.remove(0, 1, 2)  # a hole at position 1
    with pytest.raises(AssertionError, match=r"holds \[0, 2\]"):
        backend.decode(batch([(8, 3, 0)]))


def test_kv_cache_full_leaves_the_cache_as_it_was() -> None:
    backend = FakeBackend(num_cells=64, num_slots=2, usable_cells=4)
    prefill(backend, 0, [5, 6, 7])
    with pytest.raises(KVCacheFull):
        backend.decode(batch([(1, 0, 1), (2, 1, 1)]))
    assert backend.num_used_cells == 3 and backend.slot_tokens(1) == []
    assert prefill(backend, 1, [9]) >= 0 and backend.num_used_cells == 4


def test_copy_prefix_shares_cells_and_remove_frees_only_unshared_ones() -> None:
    backend = FakeBackend(num_cells=64, num_slots=3)
    prefill(backend, 0, [5, 6, 7, 8])
    backend.copy_prefix(0, 1, 3)
    assert backend.slot_tokens(1) == [5, 6, 7] and backend.num_used_cells == 4
    backend.remove(0, 0)
    assert backend.num_used_cells == 3  # position 3 was slot 0's alone
    with pytest.raises(AssertionError, match="lacks"):
        backend.copy_prefix(0, 2, 1)
    prefill(backend, 2, [1])
    with pytest.raises(AssertionError, match="another cell"):
        backend.copy_prefix(1, 2, 1)


def test_per_slot_streams_copy_cells_and_hold_a_share_each() -> None:
    backend = FakeBackend(num_cells=64, num_slots=4, kv_unified=False)
    assert backend.cells_per_slot == 16
    prefill(backend, 0, [5, 6, 7, 8])
    backend.copy_prefix(0, 1, 3)
    assert backend.slot_tokens(1) == [5, 6, 7] and backend.num_used_cells == 7  # copies
    backend.remove(0, 0)
    assert backend.slot_tokens(1) == [5, 6, 7] and backend.num_used_cells == 3
    with pytest.raises(AssertionError, match="lacks"):
        backend.copy_prefix(0, 2, 1)
    prefill(backend, 2, list(range(3, 19)))  # slot 2's whole stream
    with pytest.raises(KVCacheFull):
        backend.decode(batch([(3, 16, 2)]))
    assert prefill(backend, 3, [9]) >= 0  # the other streams are untouched


def test_the_next_token_depends_on_the_whole_history() -> None:
    backend = FakeBackend(num_cells=256, num_slots=16)
    same = prefill(backend, 0, [5, 6, 7, 8])
    assert prefill(backend, 1, [5, 6, 7, 8]) == same
    backend.copy_prefix(0, 2, 3)
    assert int(backend.decode(batch([(8, 3, 2)])).argmax()) == same
    first_differs = {prefill(backend, slot, [slot, 6, 7, 8]) for slot in range(3, 16)}
    assert len(first_differs) >= 8  # only the first token differs: the answers spread


def test_an_injected_failure_and_split_characters() -> None:
    backend = FakeBackend(fail_at_step=2)
    prefill(backend, 0, [5])
    with pytest.raises(RuntimeError, match="injected"):
        prefill(backend, 1, [5])
    assert prefill(backend, 1, [5]) >= 0
    assert (backend.token_bytes(1) + backend.token_bytes(2)).decode() == "€"
    assert all(t >= 3 for t in backend.tokenize("héllo", add_special=True))
