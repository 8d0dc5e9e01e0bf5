"""What a loaded model holds, by llama.cpp buffer: the unit of the estimate made before a load
(`olla.runtime.estimate`) and of the report a runner gives after it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Memory:
    """Bytes by llama.cpp buffer, and how many of them sit on GPUs.

    `repacked` is the CPU backend's reordered copies of some weights (CPU_REPACK, AMX): not in
    `total`, since they stand in for mapped file pages of the same tensors, which the kernel
    may drop once the copy is made.
    """

    weights: int = 0
    kv_cache: int = 0
    compute: int = 0
    output: int = 0
    gpu: int = 0
    repacked: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.output

    def to_json(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Memory:
        return cls(**{f.name: int(data.get(f.name, 0)) for f in fields(cls)})
