"""A deterministic backend for engine unit tests only, faithful to llama.cpp's cell semantics.

Cells hold (position, token) and the set of slots using them. `decode` checks that each row's
slot holds exactly the cells of positions before it, and the next token is a function of the
slot's whole token history, so any bookkeeping mistake in prefix sharing, preemption or removal
changes the output or fails loudly.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from olla.backends.base import ForwardBatch, KVCacheFull

# Token 1 and 2 spell "€" split across two tokens, so detokenizing is exercised.
_SPLIT_EURO = {1: "€".encode()[:2], 2: "€".encode()[2:]}


@dataclass
class _Cell:
    position: int
    token: int
    slots: set[int] = field(default_factory=set)


class FakeBackend:
    """Deterministic model with `num_cells` KV cells shared by `num_slots` slots."""

    def __init__(
        self,
        vocab_size: int = 64,
        num_cells: int = 512,
        num_slots: int = 8,
        eog_token: int = 0,
        eog_every: int = 0,
        fail_at_step: int | None = None,
    ) -> None:
        self.vocab_size, self.num_cells, self.num_slots = vocab_size, num_cells, num_slots
        self.eog_token, self.eog_every, self.fail_at_step = eog_token, eog_every, fail_at_step
        self._cells: dict[int, _Cell] = {}
        self._free = list(range(num_cells - 1, -1, -1))
        self._slot_cells: list[dict[int, int]] = [{} for _ in range(num_slots)]  # pos -> cell
        self.num_decodes = 0
        self.num_decoded_tokens = 0

    @property
    def num_used_cells(self) -> int:
        return len(self._cells)

    def decode(self, batch: ForwardBatch) -> npt.NDArray[np.float32]:
        self.num_decodes += 1
        if self.fail_at_step is not None and self.num_decodes == self.fail_at_step:
            raise RuntimeError("injected backend failure")
        if len(batch) > len(self._free):
            raise KVCacheFull(f"{len(batch)} tokens, {len(self._free)} free cells")
        rows = []
        for token, position, slot, want in zip(
            batch.tokens, batch.positions, batch.slots, batch.want_logits, strict=True
        ):
            held = self._slot_cells[int(slot)]
            if set(held) != set(range(int(position))):
                raise AssertionError(
                    f"slot {slot} at position {position} holds positions {sorted(held)}"
                )
            cell = self._free.pop()
            self._cells[cell] = _Cell(int(position), int(token), {int(slot)})
            held[int(position)] = cell
            if want:
                rows.append(self._logits(int(slot)))
        self.num_decoded_tokens += len(batch)
        return np.array(rows, dtype=np.float32).reshape(len(rows), self.vocab_size)

    def _logits(self, slot: int) -> list[float]:
        held = self._slot_cells[slot]
        history = [self._cells[held[p]].token for p in range(len(held))]
        digest = zlib.crc32(np.array(history, dtype=np.int32).tobytes())
        if self.eog_every and digest % self.eog_every == 0:
            token = self.eog_token
        else:
            token = 1 + digest % (self.vocab_size - 1)
        row = [0.0] * self.vocab_size
        row[token] = 10.0
        row[(token % (self.vocab_size - 1)) + 1] = 9.0  # a runner-up, for sampling tests
        return row

    def remove(self, slot: int, start: int, end: int = -1) -> None:
        held = self._slot_cells[slot]
        for position in [p for p in held if p >= start and (end < 0 or p < end)]:
            cell_id = held.pop(position)
            cell = self._cells[cell_id]
            cell.slots.discard(slot)
            if not cell.slots:
                del self._cells[cell_id]
                self._free.append(cell_id)

    def copy_prefix(self, source: int, destination: int, length: int) -> None:
        src, dst = self._slot_cells[source], self._slot_cells[destination]
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

    def token_bytes(self, token: int) -> bytes:
        return _SPLIT_EURO.get(token, f"<{token}>".encode())

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return [3 + ord(c) % (self.vocab_size - 3) for c in text]

    def close(self) -> None:
        self._cells.clear()
