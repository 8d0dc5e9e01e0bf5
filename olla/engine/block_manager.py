"""BlockManager: paged KV bookkeeping with a prefix cache, mapped onto slot-tagged cells.

llama.cpp's unified cache is cells tagged with slot (sequence) ids. A block is `block_size` cells
at positions [i*bs, (i+1)*bs) of every slot that holds it, and a slot always holds a prefix of one
chain of blocks (its `chain`). A block's `holders` are the slots whose chain includes it. The
prefix cache maps the chained hash of each full, computed block to that block.

A finished or preempted sequence's slot becomes idle but keeps its cached full blocks (ref 0,
evictable), so a later prompt with the same prefix is admitted into that slot with no copy, or
into another slot by `CopyPrefix` from a holder. Evicting a block removes its cells, and so its
descendants', from every holder; holders of an evictable block are always idle slots, since a
running sequence holds a ref on every block of its own chain.

A sequence that shifts its context (see `olla.engine.sequence`) keeps its blocks below its kept
head; the blocks after it no longer hold what their hashes say (their cells were computed after
tokens now discarded, then moved), so they leave the prefix cache, and none of the sequence's later
blocks is hashed again.

The manager never calls the backend: it returns `Remove`/`CopyPrefix`/`Shift` operations, which
the engine applies in order before the next decode.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field

from olla.engine.cache_ops import CopyPrefix, Op, Remove, Shift
from olla.engine.sequence import Sequence

__all__ = ["BlockManager", "CopyPrefix", "Op", "Remove", "Shift"]

_STOPPED = sys.maxsize  # registration count meaning "cache no more of this sequence's blocks"


@dataclass(eq=False)
class Block:
    """One block of the pool; `index` is its place in its chain (positions index*bs onwards)."""

    block_id: int
    index: int = 0
    ref_count: int = 0
    hash: bytes | None = None  # set once full, computed and entered in the prefix cache
    holders: set[int] = field(default_factory=set)


class BlockManager:
    """Allocates blocks and slots to sequences; keeps freed full blocks as a prefix cache.

    Every block is in exactly one state: free (no ref, no holder, no hash), used (ref > 0), or
    evictable (no ref, cached, held by idle slots only), least recently used first.
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        num_slots: int,
        enable_prefix_cache: bool = True,
        max_evictable_blocks: int | None = None,
        low_slots_first: bool = False,
        kv_unified: bool = True,
    ) -> None:
        if num_blocks < 1 or block_size < 1 or num_slots < 1:
            raise ValueError("num_blocks, block_size and num_slots must be positive")
        if max_evictable_blocks is not None and max_evictable_blocks < 0:
            raise ValueError("max_evictable_blocks must be >= 0")
        # Cached cells are not free in llama.cpp's unified cache: every decode row's attention
        # spans all occupied cells (masked), so an unbounded cache slows every step.
        self.max_evictable_blocks = max_evictable_blocks
        # A per-slot cache decodes a run of consecutive slots in one pass, so keep the running
        # sequences in the lowest slots rather than spread over the least recently used ones.
        self.low_slots_first = low_slots_first
        # one pool of cells whose each cell has one position for all the slots it is tagged
        # with (llama.cpp's unified cache), else a stream of its own cells per slot
        self.kv_unified = kv_unified
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.num_slots = num_slots
        self.enable_prefix_cache = enable_prefix_cache
        self._blocks = [Block(i) for i in range(num_blocks)]
        self._free = list(range(num_blocks - 1, -1, -1))  # a stack: block 0 is taken first
        self._cache: dict[bytes, int] = {}  # chained hash of a full block -> block id
        self._evictable: OrderedDict[int, None] = OrderedDict()  # least recently used first
        # the blocks each slot holds, in order; the same list as the block table while running
        self._chains: list[list[int]] = [[] for _ in range(num_slots)]
        self._idle: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_slots))
        self._num_registered: dict[int, int] = {}  # seq id -> leading blocks looked at for cache
        self.num_prefix_query_tokens = 0  # tokens looked up at admissions
        self.num_prefix_hit_tokens = 0  # of which the prefix cache supplied

    @property
    def num_free_blocks(self) -> int:
        """Blocks that hold nothing."""
        return len(self._free)

    @property
    def num_evictable_blocks(self) -> int:
        """Cached blocks no sequence uses: kept for prefix hits until their room is needed."""
        return len(self._evictable)

    @property
    def num_available_blocks(self) -> int:
        return len(self._free) + len(self._evictable)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_available_blocks

    @property
    def num_cached_blocks(self) -> int:
        """Blocks in the prefix cache, used or not."""
        return len(self._cache)

    @property
    def num_idle_slots(self) -> int:
        return len(self._idle)

    def num_held_blocks(self, slot: int) -> int:
        """Blocks `slot` holds, its running sequence's or cached while idle."""
        return len(self._chains[slot])

    def can_allocate(self, seq: Sequence) -> bool:
        """An idle slot, and room for all of `seq`'s tokens beyond its prefix hits."""
        if not self._idle:
            return False
        hits = self._hits(seq)
        revived = sum(1 for b in hits if self._blocks[b].ref_count == 0)  # leave the LRU list
        return seq.num_blocks(self.block_size) - len(hits) <= self.num_available_blocks - revived

    def allocate(self, seq: Sequence) -> list[Op]:
        """Give `seq` a slot and blocks for all its tokens; prefix hits are shared, not computed.

        Sets block_table, slot, and num_computed_tokens = num_cached_tokens = the hit tokens.
        """
        bs = self.block_size
        hits = self._hits(seq)
        slot, common = self._take_slot(hits)
        ops = self._truncate(slot, common)  # the slot's blocks past the shared prefix go
        for block_id in hits:
            self._ref(block_id)
            self._blocks[block_id].holders.add(slot)
        if common < len(hits):
            # any holder of the deepest hit holds the whole chain before it
            source = min(self._blocks[hits[-1]].holders - {slot})
            ops.append(CopyPrefix(source, slot, len(hits) * bs))
        num_hits = len(hits)
        self._chains[slot] = seq.block_table = hits  # grows into the whole table below
        seq.slot = slot
        ops += self._grow(seq, seq.num_tokens)
        seq.num_computed_tokens = seq.num_cached_tokens = num_hits * bs
        self._num_registered[seq.seq_id] = _STOPPED if seq.num_discarded else num_hits
        self.num_prefix_query_tokens += seq.num_tokens
        self.num_prefix_hit_tokens += seq.num_cached_tokens
        return ops

    def can_append(self, seq: Sequence, num_tokens: int = 1) -> bool:
        """Room for the next `num_tokens` tokens of `seq` to be computed."""
        needed = self._blocks_for(seq.num_computed_tokens + num_tokens) - len(seq.block_table)
        return needed <= self.num_available_blocks

    def append(self, seq: Sequence, num_tokens: int = 1) -> list[Op]:
        """Grow `seq`'s block table to hold its next `num_tokens` tokens; evicts if needed."""
        return self._grow(seq, seq.num_computed_tokens + num_tokens)

    def commit(self, seq: Sequence) -> None:
        """Enter `seq`'s newly computed full blocks (prompt or output) in the prefix cache."""
        start = self._num_registered.get(seq.seq_id)
        if start is None or not self.enable_prefix_cache:
            return
        full = min(seq.num_computed_tokens // self.block_size, len(seq.block_table))
        if seq.prefix_limit is not None:
            full = min(full, seq.prefix_limit // self.block_size)
        for i in range(start, full):
            block = self._blocks[seq.block_table[i]]
            digest = self._hash(seq, i)
            if self._cache.setdefault(digest, block.block_id) != block.block_id:
                # The same prefix was computed twice (both admitted before either was cached).
                # Later blocks would be chained to a parent this slot does not hold: stop here.
                self._num_registered[seq.seq_id] = _STOPPED
                return
            block.hash = digest
        self._num_registered[seq.seq_id] = max(start, full)

    def shift(self, seq: Sequence) -> list[Op] | None:
        """Shift `seq`'s context in place: discard `seq.num_shift_discard` computed tokens after
        its kept head, move the rest down, and make its blocks match.

        None, and nothing changed, when its cells cannot move: then the caller discards the
        tokens and preempts it, to recompute its context. With llama.cpp's unified cache that
        happens only when a prefix shared with another slot reaches into the kept half (past
        num_keep + the discarded half): a cell has one position for all its holders, so moving
        it would move it for them. With a context of 4,096 and the default num_keep of 4, that
        is a shared prefix of over 2,050 tokens (a conversation's history cached in another
        slot); a common system prompt is far shorter. Then the stream recomputes about half
        its context once per shift (once per half a context of tokens). A cache of a stream per
        slot always shifts in place.

        A block shared with other slots from the one the kept head ends in on is left to them,
        and a private block takes its place: in the unified cache this slot's cells of the
        kept head stay tagged with it too, counted in both blocks until the other holders let
        theirs go (the pool over-counts a few cells, never under-counts).
        """
        slot, bs = seq.slot, self.block_size
        assert slot is not None, "shift a sequence that has no slot"
        keep, n, end = seq.num_keep, seq.num_shift_discard, seq.num_computed_tokens
        head = keep // bs  # blocks wholly in the kept head: they stay as they are
        chain = seq.block_table
        others = (i + 1 for i, b in enumerate(chain) if self._blocks[b].holders != {slot})
        shared = max(others, default=0)  # leading blocks other slots hold too
        if self.kv_unified and shared * bs > keep + n:
            return None
        private = [b for b in chain[head:] if self._blocks[b].holders == {slot}]
        wanted = self._blocks_for(end - n) - head
        if wanted - len(private) > self.num_available_blocks:
            return None  # it left shared blocks and the pool has none to replace them
        for block_id in chain[head:]:
            block = self._blocks[block_id]
            if block.holders == {slot}:
                if block.hash is not None:  # its cells no longer follow the prefix it names
                    del self._cache[block.hash]
                    block.hash = None
                continue
            # another slot's too, whose cells stay as they are: only this slot lets it go
            block.ref_count -= 1
            block.holders.discard(slot)
            if block.ref_count == 0:  # held by idle slots only: cached, evictable
                self._evictable[block_id] = None
        for block_id in private[wanted:]:
            block = self._blocks[block_id]
            block.ref_count, block.holders = 0, set()
            self._release(block)
        reused = private[:wanted]
        for index, block_id in enumerate(reused, start=head):
            self._blocks[block_id].index = index
        chain[head:] = reused  # in place: the same list is the slot's chain
        ops: list[Op] = [Remove(slot, keep, keep + n), Shift(slot, keep + n, end, -n)]
        seq.discard(n)
        self.stop_hashing(seq)
        ops += self._grow(seq, end - n)
        return ops

    def stop_hashing(self, seq: Sequence) -> None:
        """`seq` has shifted: none of its blocks past its kept head is a prefix of anything."""
        del seq.block_hashes[seq.num_keep // self.block_size :]
        if seq.seq_id in self._num_registered:
            self._num_registered[seq.seq_id] = _STOPPED

    def free(self, seq: Sequence) -> list[Op]:
        """Release `seq`'s blocks; its slot keeps the cached full prefix and becomes idle."""
        if seq.slot is None:
            return []
        slot, chain = seq.slot, seq.block_table
        for block_id in chain:
            self._blocks[block_id].ref_count -= 1
        keep = 0
        while keep < len(chain) and self._blocks[chain[keep]].hash is not None:
            keep += 1
        ops = self._truncate(slot, keep)  # the partial and uncached blocks' cells go now
        for block_id in reversed(chain):  # deepest first: evicted before their ancestors
            if self._blocks[block_id].ref_count == 0:
                self._evictable[block_id] = None
        self._idle[slot] = None
        self._num_registered.pop(seq.seq_id, None)
        seq.block_table, seq.slot = [], None
        cap = self.max_evictable_blocks
        while cap is not None and len(self._evictable) > cap:
            ops += self._evict_lru()
        return ops

    def evict(self, num_blocks: int) -> list[Op]:
        """Evict cached blocks until `num_blocks` more are free (or none is left to evict).

        For a backend that found less room than the blocks promise (KVCacheFull).
        """
        target = min(self.num_blocks, len(self._free) + num_blocks)
        ops: list[Op] = []
        while len(self._free) < target and self._evictable:
            ops += self._evict_lru()
        return ops

    def check(self) -> None:
        """Assert every internal invariant (for tests)."""
        evictable, free = set(self._evictable), set(self._free)
        assert len(free) == len(self._free) and not free & evictable
        held: dict[int, set[int]] = {}
        for slot, chain in enumerate(self._chains):
            for index, block_id in enumerate(chain):
                assert self._blocks[block_id].index == index, (slot, chain)
                held.setdefault(block_id, set()).add(slot)
            if slot in self._idle:
                assert all(self._blocks[b].hash is not None for b in chain), (slot, chain)
        for block in self._blocks:
            assert block.holders == held.get(block.block_id, set()), block
            if block.hash is not None:
                assert self._cache[block.hash] == block.block_id, block
            if block.block_id in free:
                assert block.ref_count == 0 and not block.holders and block.hash is None, block
            elif block.block_id in evictable:
                assert block.ref_count == 0 and block.hash is not None, block
                assert block.holders and block.holders <= set(self._idle), block
            else:
                assert block.ref_count > 0, block
        assert len(self._cache) == sum(b.hash is not None for b in self._blocks)

    def _blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _hash(self, seq: Sequence, index: int) -> bytes:
        """Chained hash of `seq`'s full block `index` (a hash of all tokens up to its end)."""
        hashes, bs = seq.block_hashes, self.block_size
        while len(hashes) <= index:  # the context only grows, but a shift drops hashes
            i = len(hashes)
            data = array("i", seq.tokens(i * bs, (i + 1) * bs)).tobytes()
            parent = hashes[-1] if hashes else b""
            hashes.append(hashlib.blake2b(parent + data, digest_size=16).digest())
        return hashes[index]

    def _hits(self, seq: Sequence) -> list[int]:
        """The cached blocks of `seq`'s leading full blocks, short of its last token's block."""
        hits: list[int] = []
        if not self.enable_prefix_cache:
            return hits
        # (a shifted sequence's context may hit blocks computed afresh: never its own moved ones)
        last = (seq.num_tokens - 1) // self.block_size
        if seq.prefix_limit is not None:
            last = min(last, seq.prefix_limit // self.block_size)
        for i in range(last):
            block_id = self._cache.get(self._hash(seq, i))
            if block_id is None:
                break
            hits.append(block_id)
        return hits

    def _take_slot(self, hits: list[int]) -> tuple[int, int]:
        """An idle slot and how many of `hits` it holds: the one holding most of them, else an
        empty one, else the least recently used (or the lowest, with `low_slots_first`)."""
        idle = self._idle.keys()
        for k in range(len(hits) - 1, -1, -1):
            holders = self._blocks[hits[k]].holders & idle
            if holders:  # a holder of hits[k] holds hits[:k + 1] and no more of them
                slot = min(holders)
                del self._idle[slot]
                return slot, k + 1
        if self.low_slots_first:
            chosen = min(idle)
        else:
            empty = next((s for s in idle if not self._chains[s]), None)
            chosen = next(iter(idle)) if empty is None else empty
        del self._idle[chosen]
        return chosen, 0

    def _truncate(self, slot: int, keep: int) -> list[Op]:
        """Drop `slot`'s blocks from index `keep` on: their cells go, orphaned blocks are freed."""
        chain = self._chains[slot]
        if len(chain) <= keep:
            return []
        for block_id in chain[keep:]:
            block = self._blocks[block_id]
            block.holders.discard(slot)
            if not block.holders and block.ref_count == 0:
                self._release(block)
        del chain[keep:]
        return [Remove(slot, keep * self.block_size)]

    def _release(self, block: Block) -> None:
        if block.hash is not None:
            del self._cache[block.hash]
            block.hash = None
        self._evictable.pop(block.block_id, None)
        self._free.append(block.block_id)

    def _ref(self, block_id: int) -> None:
        self._blocks[block_id].ref_count += 1
        self._evictable.pop(block_id, None)

    def _grow(self, seq: Sequence, num_tokens: int) -> list[Op]:
        assert seq.slot is not None, "grow a sequence that has no slot"
        ops: list[Op] = []
        while len(seq.block_table) < self._blocks_for(num_tokens):
            if not self._free:
                ops += self._evict_lru()
            block = self._blocks[self._free.pop()]
            block.index, block.ref_count, block.holders = len(seq.block_table), 1, {seq.slot}
            seq.block_table.append(block.block_id)  # also the slot's chain
        return ops

    def _evict_lru(self) -> list[Op]:
        """Evict the least recently used cached block, and its descendants, from every holder."""
        block_id = next(iter(self._evictable))
        block = self._blocks[block_id]
        ops: list[Op] = []
        for slot in sorted(block.holders):  # idle slots only (see the module docstring)
            ops += self._truncate(slot, block.index)
        assert block_id not in self._evictable, f"evictable block {block_id} had no holder"
        return ops  # it lost its last holder with no ref left: _truncate released it
