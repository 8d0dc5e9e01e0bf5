"""A deterministic backend for engine unit tests only, faithful to llama.cpp's cell semantics.

The cache is `num_cells` cells, each holding (position, token) and the set of slots using it; one
pool shared by all slots, or (`kv_unified=False`) an equal stream of cells per slot, where
`copy_prefix` copies cells as llama.cpp does across streams. `decode` checks that each row's slot
holds exactly one cell at every earlier position and none at its own, and the next token is a
function of the slot's whole token history by position; so a bookkeeping mistake in prefix
sharing, preemption or removal either fails loudly or changes the output.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from olla.engine.backend import ForwardBatch, KVCacheFull
from olla.engine.constraint import Constraint
from olla.engine.images import ImageSpan
from olla.errors import NotSupported
from olla.memory import Memory

# Tokens 1 and 2 spell "€" split across two tokens, so detokenizing is exercised.
_PIECES = {1: "€".encode()[:2], 2: "€".encode()[2:]}


@dataclass
class _Cell:
    position: int
    token: int
    slots: set[int] = field(default_factory=set)


class FakeBackend:
    """Deterministic model over `num_cells` KV cells shared by `num_slots` slots.

    Args:
        eog_every: when > 0, about one sampled token in `eog_every` is `eog_token`.
        usable_cells: fewer cells than `num_cells` really usable, to provoke KVCacheFull
            (per slot when not unified).
        fail_at_step: the decode call (1-based) that raises RuntimeError.
        kv_unified: one pool of cells for all slots, else `num_cells // num_slots` per slot.
        device_sampling: draw `device_greedy` rows' tokens here, as llama.cpp's backend
            samplers do, and leave NaN in their logits so host sampling of them would show.
        can_shift: whether `shift` works (llama.cpp says no for recurrent or M-RoPE models).
    """

    def __init__(
        self,
        vocab_size: int = 64,
        num_cells: int = 512,
        num_slots: int = 8,
        eog_token: int = 0,
        eog_every: int = 0,
        usable_cells: int | None = None,
        fail_at_step: int | None = None,
        kv_unified: bool = True,
        device_sampling: bool = False,
        can_shift: bool = True,
    ) -> None:
        if vocab_size < 4:
            raise ValueError("vocab_size must be at least 4")
        self.vocab_size, self.num_cells, self.num_slots = vocab_size, num_cells, num_slots
        self.eog_token, self.eog_every, self.fail_at_step = eog_token, eog_every, fail_at_step
        self.kv_unified = kv_unified
        self.device_sampling = device_sampling
        self.can_shift = can_shift
        self.num_shifts = 0
        self._sampled: npt.NDArray[np.int32] | None = None
        self.num_device_sampled = 0
        self.memory = Memory()
        self.cells_per_slot = num_cells if kv_unified else num_cells // num_slots
        usable = self.cells_per_slot if usable_cells is None else usable_cells
        usable = min(usable, self.cells_per_slot)
        self._cells: dict[int, _Cell] = {}
        # free cell ids per stream: one stream when unified, else one per slot
        streams = 1 if kv_unified else num_slots
        self._free = [
            list(range(first + usable - 1, first - 1, -1))
            for first in range(0, streams * self.cells_per_slot, self.cells_per_slot)
        ]
        self._slot_cells: list[dict[int, int]] = [{} for _ in range(num_slots)]  # pos -> cell
        self.num_decodes = 0  # calls, failed ones included
        self.num_decoded_tokens = 0
        self.num_image_rows = 0  # embedding rows decoded (decode_image)
        self.last_batch: ForwardBatch | None = None

    @property
    def num_used_cells(self) -> int:
        return len(self._cells)

    def slot_tokens(self, slot: int) -> list[int]:
        """The tokens `slot` holds, by position (for tests)."""
        held = self._slot_cells[slot]
        return [self._cells[held[p]].token for p in sorted(held)]

    def decode(self, batch: ForwardBatch) -> npt.NDArray[np.float32]:
        """Place every row in a free cell and return logits for the rows that want them."""
        self.num_decodes += 1
        if self.num_decodes == self.fail_at_step:
            raise RuntimeError("injected backend failure")
        rows = list(
            zip(
                batch.tokens.tolist(),
                batch.positions.tolist(),
                batch.slots.tolist(),
                batch.want_logits.tolist(),
                strict=True,
            )
        )
        self._check_positions(rows)
        needed: dict[int, int] = {}
        for _, _, slot, _ in rows:
            needed[self._stream(slot)] = needed.get(self._stream(slot), 0) + 1
        for stream, count in needed.items():
            if count > len(self._free[stream]):
                raise KVCacheFull(f"{count} tokens, {len(self._free[stream])} free cells")
        logits = np.zeros((int(batch.want_logits.sum()), self.vocab_size), dtype=np.float32)
        out = 0
        for token, position, slot, want in rows:
            cell = self._free[self._stream(slot)].pop()
            self._cells[cell] = _Cell(position, token, {slot})
            self._slot_cells[slot][position] = cell
            if want:
                self._fill_logits(logits[out], slot, position)
                out += 1
        self.num_decoded_tokens += len(rows)
        self.last_batch = batch
        self._sampled = None
        if self.device_sampling and batch.device_greedy is not None:
            device = batch.device_greedy[batch.want_logits]
            if device.any():
                self._sampled = np.where(device, logits.argmax(axis=1), -1).astype(np.int32)
                logits[device] = np.nan
                self.num_device_sampled += int(device.sum())
        return logits

    def sampled_tokens(self) -> npt.NDArray[np.int32] | None:
        return self._sampled

    def decode_image(
        self, slot: int, image: ImageSpan, first: int, position: int, want_logits: bool
    ) -> npt.NDArray[np.float32]:
        """Each embedding row is a cell whose token is a hash of the row: what follows an
        image depends on its pixels, as a model's answer does."""
        rows = image.embeddings[first:]
        n = len(rows)
        tokens = np.array([zlib.crc32(row.tobytes()) & 0x7FFFFFFF for row in rows], np.int32)
        want = np.zeros(n, dtype=bool)
        want[-1] = want_logits
        positions = image.positions(position, first)[:n].astype(np.int32)
        self.num_image_rows += n
        return self.decode(ForwardBatch(tokens, positions, np.full(n, slot, np.int32), want))

    def _check_positions(self, rows: list[tuple[int, int, int, bool]]) -> None:
        """Each row's slot must hold exactly positions [0, position) before it is placed."""
        following: dict[int, int] = {}  # slot -> the position its next row must have
        for _, position, slot, _ in rows:
            expected = following.get(slot)
            if expected is None:
                held = self._slot_cells[slot]
                if len(held) != position or (held and max(held) != position - 1):
                    raise AssertionError(
                        f"slot {slot} fed position {position} but holds {_ranges(sorted(held))}"
                    )
            elif position != expected:
                raise AssertionError(f"slot {slot} fed position {position} after {expected - 1}")
            following[slot] = position + 1

    def _fill_logits(self, row: npt.NDArray[np.float32], slot: int, position: int) -> None:
        held = self._slot_cells[slot]
        history = [self._cells[held[p]].token for p in range(position + 1)]
        digest = zlib.crc32(np.array(history, dtype=np.int32).tobytes())
        if self.eog_every and digest % self.eog_every == 0:
            token = self.eog_token
        else:  # any token but eog
            token = (self.eog_token + 1 + digest % (self.vocab_size - 1)) % self.vocab_size
        row[token] = 10.0
        row[(token + 1 + digest % 7) % self.vocab_size] = 9.0  # a runner-up, for sampling tests

    def remove(self, slot: int, start: int, end: int = -1) -> None:
        """Untag positions [start, end) of `slot`; free cells nobody uses."""
        held = self._slot_cells[slot]
        for position in [p for p in held if p >= start and (end < 0 or p < end)]:
            cell_id = held.pop(position)
            cell = self._cells[cell_id]
            cell.slots.discard(slot)
            if not cell.slots:
                del self._cells[cell_id]
                self._free[self._stream(slot)].append(cell_id)

    def shift(self, slot: int, start: int, end: int, delta: int) -> None:
        """Move `slot`'s cells at positions [start, end) by `delta`; they must be its alone
        (unified) and land on positions it does not hold."""
        if not self.can_shift:
            raise AssertionError("shift on a backend that cannot shift")
        held = self._slot_cells[slot]
        moved = {p: held.pop(p) for p in sorted(held) if start <= p and (end < 0 or p < end)}
        for position, cell_id in moved.items():
            cell = self._cells[cell_id]
            if cell.slots != {slot}:
                raise AssertionError(f"shift: slot {slot}'s cell at {position} is shared")
            if position + delta in held or position + delta < 0:
                raise AssertionError(f"shift: slot {slot} already holds {position + delta}")
            cell.position = position + delta
            held[position + delta] = cell_id
        self.num_shifts += 1

    def copy_prefix(self, source: int, destination: int, length: int) -> None:
        """Make `destination` hold `source`'s positions [0, length)."""
        src, dst = self._slot_cells[source], self._slot_cells[destination]
        if not self.kv_unified:
            # llama.cpp copies the whole stream, then the engine's caller cuts it back
            if any(position not in src for position in range(length)):
                raise AssertionError(f"copy_prefix: slot {source} lacks positions < {length}")
            for position, cell_id in sorted(dst.items()):
                if position >= length:
                    raise AssertionError(f"copy_prefix: slot {destination} holds {position}")
                if self._cells[cell_id].token != self._cells[src[position]].token:
                    raise AssertionError(f"copy_prefix: slot {destination} differs at {position}")
            self.remove(destination, 0)
            for position, cell_id in sorted(src.items()):
                cell = self._cells[cell_id]
                copy = self._free[self._stream(destination)].pop()
                self._cells[copy] = _Cell(cell.position, cell.token, {destination})
                dst[position] = copy
            self.remove(destination, length)
            return
        for position in range(length):
            if position not in src:
                raise AssertionError(f"copy_prefix: slot {source} lacks position {position}")
            cell_id = src[position]
            if dst.get(position, cell_id) != cell_id:
                raise AssertionError(
                    f"copy_prefix: slot {destination} has another cell at {position}"
                )
            dst[position] = cell_id
            self._cells[cell_id].slots.add(destination)

    def is_end_of_generation(self, token: int) -> bool:
        return token == self.eog_token

    def constraint(self, fmt: Any) -> Constraint:
        raise NotSupported("the fake backend has no grammars; pass a Constraint to Engine.add")

    @property
    def embed_limit(self) -> int:
        return 0

    def embed(self, tokens: list[int]) -> npt.NDArray[np.float32]:
        raise NotSupported("the fake backend makes no embeddings")

    def _stream(self, slot: int) -> int:
        return 0 if self.kv_unified else slot

    def token_bytes(self, token: int) -> bytes:
        return _PIECES.get(token, f"<{token}>".encode())

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        """One token per character, never eog nor the split-character pieces."""
        return [3 + ord(c) % (self.vocab_size - 3) for c in text]

    def close(self) -> None:
        self._cells.clear()
        self._slot_cells = [{} for _ in range(self.num_slots)]


def _ranges(positions: list[int]) -> str:
    """Sorted positions as compact ranges, for error messages: [0-15, 17]."""
    runs: list[list[int]] = []
    for p in positions:
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return "[" + ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) + "]"
