"""What a runner is started with: the model, its memory plan and its engine's sizes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a runner needs to load its model: sent as JSON on its command line."""

    model_path: str
    socket_path: str
    adapter_paths: tuple[str, ...] = ()  # LoRA adapters (GGUF) to apply, in order
    projector_path: str = ""  # a vision projector (mmproj GGUF); "": the model reads no images
    model_name: str = ""  # as the daemon knows it, for messages
    backend: str = "llama_cpp"  # or "exllamav2" (olla.backends.choice)
    num_ctx: int = 4096
    num_parallel: int = 4
    max_batch_tokens: int = 512
    num_threads: int | None = None  # llama.cpp's threads; None: the backend's default
    num_gpu_layers: int = 0  # llama.cpp's n_gpu_layers (the output layer counts as one)
    main_gpu: int | None = None  # the one GPU to use; None: llama.cpp's choice
    flash_attention: bool | None = None
    cache_type: str = "f16"
    kv_unified: bool = False
    block_size: int = 16
    queue_timeout: float = 0.0  # seconds a request may wait for a sequence; 0: no limit
    debug: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunnerSpec:
        fields = json.loads(text)
        fields["adapter_paths"] = tuple(fields.get("adapter_paths", ()))  # a list in JSON
        return cls(**fields)

    @property
    def socket(self) -> Path:
        return Path(self.socket_path)
