"""The private protocol between the daemon and a runner: JSON lines over a unix socket.

Daemon → runner: `{"op": "submit", "id": N, "prompt": "...", "options": {...}}` (and optional
`"format"`, `"context"`, `"logprobs"`, and `"user"` for round-robin admission), `{"op": "embed",
"id": N, "inputs": [...], "truncate": true}`, `{"op": "cancel",
"id": N}`, `{"op": "health", "id": N}`, `{"op": "stats", "id": N}`. Runner → daemon: lines tagged
with the same id: `{"id": N, "text": "..."}` as text is released, then `{"id": N, "done": true,
...counts and timings}`, or `{"id": N, "error": "...", "status": 400}`. One connection carries
many requests at once; the ids keep them apart.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Lines can carry a whole prompt (a long context), so allow more than asyncio's 64 KiB default.
LINE_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a runner needs to load its model: sent as JSON on its command line."""

    model_path: str
    socket_path: str
    num_ctx: int = 4096
    num_parallel: int = 4
    max_batch_tokens: int = 512
    num_threads: int | None = None
    num_gpu_layers: int = 0  # llama.cpp's n_gpu_layers (the output layer counts as one)
    main_gpu: int | None = None  # the one GPU to use; None: llama.cpp's choice
    flash_attention: bool | None = None
    cache_type: str = "f16"
    kv_unified: bool = False
    block_size: int = 16
    debug: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunnerSpec:
        return cls(**json.loads(text))

    @property
    def socket(self) -> Path:
        return Path(self.socket_path)


async def write_message(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    """Send one message as a JSON line."""
    writer.write(json.dumps(message, ensure_ascii=False).encode() + b"\n")
    await writer.drain()


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """Read one JSON-line message; None at end of stream."""
    line = await reader.readline()
    if not line:
        return None
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("runner protocol: a message must be a JSON object")
    return message
