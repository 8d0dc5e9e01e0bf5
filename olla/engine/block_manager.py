"""BlockManager: paged KV bookkeeping with a prefix cache, mapped onto slot-tagged cells.

llama.cpp's unified cache is cells tagged with slot (sequence) ids. A block is `block_size` cells
at fixed positions [i*bs, (i+1)*bs) of every slot that holds it; a slot always holds a prefix of
one chain of blocks. Finished sequences leave their full, hashed blocks in their slot (cached,
ref 0), so a later prompt with the same prefix gets them by `CopyPrefix` (no recompute); those
blocks are evicted least-recently-used when space is needed. The manager never calls the backend:
it returns `Remove`/`CopyPrefix` operations that the engine applies in order.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from olla.engine.sequence import Sequence


@dataclass(frozen=True)
class Remove:
    """Untag positions >= start of `slot` (llama_memory_seq_rm(slot, start, -1))."""

    slot: int
    start: int


@dataclass(frozen=True)
class CopyPrefix:
    """Tag positions [0, length) of `source` with `destination` too (llama_memory_seq_cp)."""

    source: int
    destination: int
    length: int


Op = Remove | CopyPrefix


@dataclass(eq=False)
class Block:
    block_id: int
    index: int = 0  # which block of its chain: positions [index*bs, (index+1)*bs)
    ref_count: int = 0
    hash: int | None = None  # set once full and entered in the prefix cache
    holders: set[int] = field(default_factory=set)  # slots whose cells include this block


class BlockManager:
    """Allocates blocks and slots to sequences; keeps freed full blocks as a prefix cache."""

    def __init__(
        self, num_blocks: int, block_size: int, num_slots: int, enable_prefix_cache: bool = True
    ) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.enable_prefix_cache = enable_prefix_cache
        self._blocks = [Block(i) for i in range(num_blocks)]
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        self._cached: dict[int, int] = {}  # chained hash -> block id
        self._evictable: OrderedDict[int, None] = OrderedDict()  # ref-0 cached blocks, LRU first
        self._chains: list[list[int]] = [[] for _ in range(num_slots)]  # blocks each slot holds
        self._idle: OrderedDict[int, None] = OrderedDict((s, None) for s in range(num_slots))
        self._hashed: dict[int, tuple[int, int]] = {}  # seq id -> (blocks hashed, last hash)
        self.num_prefix_queries = 0  # prompt tokens looked up at admission
        self.num_prefix_hits = 0  # of which found in the cache

    @property
    def num_free_blocks(self) -> int:
        """Blocks available to new tokens: free ones plus evictable cached ones."""
        return len(self._free) + len(self._evictable)

    @property
    def num_cached_blocks(self) -> int:
        return len(self._evictable)

    def _hashes(self, seq: Sequence, num_blocks: int) -> list[int]:
        hashes, parent = [], 0
        for i in range(num_blocks):
            tokens = seq.tokens(i * self.block_size, (i + 1) * self.block_size)
            parent = hash((parent, tuple(tokens)))
            hashes.append(parent)
        return hashes

    def _hits(self, seq: Sequence) -> list[int]:
        if not self.enable_prefix_cache:
            return []
        # at least the last token must be computed: its logits give the next token
        full = (seq.num_tokens - 1) // self.block_size
        hits = []
        for h in self._hashes(seq, full):
            block_id = self._cached.get(h)
            if block_id is None:
                break
            hits.append(block_id)
        return hits

    def _blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def can_allocate(self, seq: Sequence) -> bool:
        """Room for the whole of `seq`'s tokens (after prefix hits) and an idle slot."""
        hits = self._hits(seq)
        reused = sum(1 for b in hits if b in self._evictable)
        needed = self._blocks_needed(seq.num_tokens) - len(hits)
        return bool(self._idle) and needed <= self.num_free_blocks - reused

    def allocate(self, seq: Sequence) -> list[Op]:
        """Give `seq` a slot and blocks; prefix hits are shared, not recomputed."""
        hits = self._hits(seq)
        ops: list[Op] = []
        slot = self._pick_slot(hits)
        common = _common_prefix(self._chains[slot], hits)
        ops += self._truncate(slot, common)
        for block_id in hits:
            self._ref(block_id)
            self._blocks[block_id].holders.add(slot)
        if common < len(hits):
            source = next(iter(self._blocks[hits[-1]].holders - {slot}))
            ops.append(CopyPrefix(source, slot, len(hits) * self.block_size))
        table = list(hits)
        for index in range(len(hits), self._blocks_needed(seq.num_tokens)):
            ops += self._new_block(table, index, slot)
        self._chains[slot] = list(table)
        seq.block_table, seq.slot = table, slot
        seq.num_computed_tokens = seq.num_cached_tokens = len(hits) * self.block_size
        if hits:
            self._hashed[seq.seq_id] = (len(hits), self._blocks[hits[-1]].hash or 0)
        self.num_prefix_queries += seq.num_tokens
        self.num_prefix_hits += seq.num_cached_tokens
        return ops

    def _pick_slot(self, hits: list[int]) -> int:
        """An idle slot: the one already holding most of `hits`, else the least recently used."""
        best = max(self._idle, key=lambda s: _common_prefix(self._chains[s], hits), default=None)
        assert best is not None, "allocate() without an idle slot: check can_allocate first"
        if _common_prefix(self._chains[best], hits) == 0:
            best = next(iter(self._idle))
        del self._idle[best]
        return best

    def can_append(self, seq: Sequence, num_tokens: int) -> bool:
        """Room for `seq` to hold `num_tokens` tokens in all."""
        return self._blocks_needed(num_tokens) - len(seq.block_table) <= self.num_free_blocks

    def append(self, seq: Sequence, num_tokens: int) -> list[Op]:
        """Grow `seq`'s block table to hold `num_tokens` tokens."""
        ops: list[Op] = []
        assert seq.slot is not None
        while len(seq.block_table) < self._blocks_needed(num_tokens):
            ops += self._new_block(seq.block_table, len(seq.block_table), seq.slot)
        self._chains[seq.slot] = list(seq.block_table)
        return ops

    def commit(self, seq: Sequence) -> None:
        """Enter `seq`'s newly full (computed) blocks in the prefix cache."""
        if not self.enable_prefix_cache:
            return
        done, parent = self._hashed.get(seq.seq_id, (0, 0))
        if done < 0:
            return
        full = seq.num_computed_tokens // self.block_size
        for i in range(done, full):  # only the blocks filled since the last call
            block = self._blocks[seq.block_table[i]]
            tokens = seq.tokens(i * self.block_size, (i + 1) * self.block_size)
            parent = hash((parent, tuple(tokens)))
            if block.hash is None:
                if parent in self._cached:
                    # the same content computed twice: the first stays cached, and so that
                    # chains stay consistent, nothing after this block is cached either
                    self._hashed[seq.seq_id] = (-1, 0)
                    return
                block.hash = parent
                self._cached[parent] = block.block_id
        self._hashed[seq.seq_id] = (max(done, full), parent)

    def free(self, seq: Sequence) -> list[Op]:
        """Release `seq`'s blocks; its slot keeps the cached full prefix and becomes idle."""
        if seq.slot is None:
            return []
        slot, table = seq.slot, seq.block_table
        for block_id in table:
            self._blocks[block_id].ref_count -= 1
        keep = 0
        while keep < len(table) and self._blocks[table[keep]].hash is not None:
            keep += 1
        ops = self._truncate(slot, keep)  # cells past the cached prefix go now
        for block_id in reversed(table[:keep]):  # deepest first: evicted before their parents
            if self._blocks[block_id].ref_count == 0:
                self._evictable[block_id] = None
        self._idle[slot] = None
        self._hashed.pop(seq.seq_id, None)
        seq.block_table, seq.slot = [], None
        return ops

    def _truncate(self, slot: int, keep: int) -> list[Op]:
        """Drop slot's blocks from index `keep` on: cells removed, orphans freed."""
        chain = self._chains[slot]
        if keep >= len(chain):
            return []
        for block_id in chain[keep:]:
            block = self._blocks[block_id]
            block.holders.discard(slot)
            if not block.holders and block.ref_count == 0:
                self._release(block)
        self._chains[slot] = chain[:keep]
        return [Remove(slot, keep * self.block_size)]

    def _release(self, block: Block) -> None:
        if block.hash is not None:
            self._cached.pop(block.hash, None)
            block.hash = None
        self._evictable.pop(block.block_id, None)
        block.ref_count = 0
        self._free.append(block.block_id)

    def _ref(self, block_id: int) -> None:
        self._blocks[block_id].ref_count += 1
        self._evictable.pop(block_id, None)

    def _new_block(self, table: list[int], index: int, slot: int) -> list[Op]:
        ops: list[Op] = []
        if not self._free:
            ops += self._evict_one()
        block = self._blocks[self._free.pop()]
        block.index, block.ref_count, block.holders = index, 1, {slot}
        table.append(block.block_id)
        return ops

    def _evict_one(self) -> list[Op]:
        """Evict the least recently used cached block from every (idle) slot holding it."""
        block_id, _ = self._evictable.popitem(last=False)
        block = self._blocks[block_id]
        ops: list[Op] = []
        for slot in list(block.holders):
            ops += self._truncate(slot, block.index)
        if block.hash is not None:  # held by no slot at all: release it here
            self._release(block)
        return ops


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n
