"""The KV cache operations the block manager asks of a backend, in order, before a decode."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Remove:
    """Untag positions [start, end) of `slot`, end -1: to the end (llama_memory_seq_rm)."""

    slot: int
    start: int
    end: int = -1


@dataclass(frozen=True)
class CopyPrefix:
    """Tag positions [0, length) of `source` with `destination` too (llama_memory_seq_cp)."""

    source: int
    destination: int
    length: int


@dataclass(frozen=True)
class Shift:
    """Add `delta` to the positions [start, end) of `slot` (llama_memory_seq_add)."""

    slot: int
    start: int
    end: int
    delta: int


Op = Remove | CopyPrefix | Shift
