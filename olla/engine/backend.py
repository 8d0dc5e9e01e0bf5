"""The contract between the engine and a model backend (llama.cpp, the fake for tests): the
engine drives a `Backend`; each backend package implements it.

A backend owns a KV cache of `num_cells` cells for `num_slots` sequence slots, in one of
llama.cpp's two layouts. Unified: one pool shared by all slots; each cell holds one token's keys
and values at a position and is tagged with the set of slots that use it, and `copy_prefix` tags
existing cells with one more slot (no data is copied). Per slot: each slot has its own stream of
`cells_per_slot` cells, and `copy_prefix` copies the data. Either way a shared prompt prefix is
computed once. A cell is free when no slot uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from olla.engine.constraint import Constraint
from olla.engine.images import ImageSpan
from olla.errors import OllaError
from olla.memory import Memory


class KVCacheFull(OllaError):
    """decode found no room in the KV cache for the batch (llama_decode returned 1)."""


@dataclass(frozen=True)
class ForwardBatch:
    """Tokens to run through the model in one decode call, as parallel arrays.

    Row i feeds `tokens[i]` at position `positions[i]` of slot `slots[i]`; rows with
    `want_logits[i]` get a row of logits back, in batch order. A row with `device_greedy[i]`
    may instead have its token drawn (argmax) by the backend on its device: see
    `Backend.sampled_tokens`.
    """

    tokens: npt.NDArray[np.int32]
    positions: npt.NDArray[np.int32]
    slots: npt.NDArray[np.int32]
    want_logits: npt.NDArray[np.bool_]
    device_greedy: npt.NDArray[np.bool_] | None = None

    def __len__(self) -> int:
        return len(self.tokens)


class Backend(Protocol):
    """A loaded model with a KV cache; every method is called from the engine's one thread."""

    vocab_size: int
    num_cells: int  # KV cache capacity in tokens, over all slots
    num_slots: int  # sequence slots (llama.cpp seq ids 0..num_slots-1)
    kv_unified: bool  # one pool of cells for all slots, else a stream per slot
    memory: Memory  # what loading took, by buffer
    cells_per_slot: int  # what one slot can hold: num_cells when unified
    device_sampling: bool  # draws ForwardBatch.device_greedy rows itself (sampled_tokens)
    can_shift: bool  # `shift` works: positions are plain (no recurrent state, no M-RoPE)

    def decode(self, batch: ForwardBatch) -> npt.NDArray[np.float32]:
        """Run the batch; return logits (rows with want_logits, vocab_size) float32.

        Raises KVCacheFull if the cache has no room; the cache is then as before the call.
        """
        ...

    def decode_image(
        self, slot: int, image: ImageSpan, first: int, position: int, want_logits: bool
    ) -> npt.NDArray[np.float32]:
        """Decode rows [first, num_tokens) of `image`'s embeddings into `slot`, the image's
        first row at `position`; the last row's logits (1, vocab_size) if `want_logits`, else
        none. Raises KVCacheFull as `decode` does, leaving the cache as before the call."""
        ...

    def sampled_tokens(self) -> npt.NDArray[np.int32] | None:
        """The tokens the last decode drew on the device, one per logits row, -1 for rows the
        host must sample; None when it drew none (the logits of such rows are not valid)."""
        ...

    def remove(self, slot: int, start: int, end: int = -1) -> None:
        """Untag positions [start, end) of `slot` (end -1: to the end); free cells nobody uses."""
        ...

    def shift(self, slot: int, start: int, end: int, delta: int) -> None:
        """Add `delta` to the positions [start, end) of `slot`'s cells (a context shift).

        Unified, only cells `slot` holds alone may move: a cell has one position for all the
        slots it is tagged with.
        """
        ...

    def copy_prefix(self, source: int, destination: int, length: int) -> None:
        """Make `destination` hold `source`'s positions [0, length).

        `destination` holds nothing, or a prefix of those same positions, before the call.
        """
        ...

    def is_end_of_generation(self, token: int) -> bool:
        """True for EOS/EOT and other end-of-generation tokens."""
        ...

    def token_bytes(self, token: int) -> bytes:
        """The bytes a token stands for (may be part of a UTF-8 character)."""
        ...

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        """Token ids of `text`; special tokens written in the text are parsed as such."""
        ...

    @property
    def embed_limit(self) -> int:
        """The most tokens one embedding input may have."""
        ...

    def embed(self, tokens: list[int]) -> npt.NDArray[np.float32]:
        """The model's pooled embedding of `tokens`, as the model makes it (not normalised)."""
        ...

    def constraint(self, fmt: Any) -> Constraint:
        """A grammar for Ollama's `format` ("json" or a JSON schema); InvalidRequest if not."""
        ...

    def close(self) -> None:
        """Free the model and its cache."""
        ...
