"""What makes two loads of a model the same: its files and the options that shape the load."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from olla.backends.choice import EXLLAMAV2, LLAMA_CPP, check_exllamav2
from olla.config import Settings, parse_cache_type, parse_switch
from olla.errors import InvalidRequest, NotSupported
from olla.registry.model_dir import DIRECTORY_FORMATS
from olla.registry.store import ResolvedModel

MAX_NUM_CTX = 1 << 20  # beyond any model's training: surely a typo, not a memory question
AUTO_NUM_CTX = 4096  # an automatic key's num_ctx until the manager chooses (auto_context.py)
MAX_THREADS = 256  # or the CPU count if larger: more threads than that only fail to start


@dataclass(frozen=True)
class LoadKey:
    """The model file, its adapters and the options that shape its load; a change of one
    reloads the model."""

    model_path: str
    num_ctx: int  # with auto_ctx: AUTO_NUM_CTX as asked, the value chosen once placed
    num_gpu: int | None  # layers on the GPU as asked; None: as many as fit
    num_threads: int | None
    cache_type: str | None  # None: f16 on a GPU, CPU_CACHE_TYPE on the CPU
    flash_attention: bool | None  # None: llama.cpp's choice
    backend: str = LLAMA_CPP  # by the model's format: llama.cpp, or exllamav2 for directories
    adapter_paths: tuple[str, ...] = ()  # LoRA adapters, applied in the model's runner
    projector_path: str = ""  # a vision projector, loaded by the runner beside the model
    auto_ctx: bool = False  # nobody set num_ctx: olla chooses it (runtime/auto_context.py)

    def serves(self, asked: LoadKey) -> bool:
        """Whether a model loaded with this key serves a request for `asked` without a reload:
        the same load, where an automatic num_ctx takes whatever value was chosen (so that the
        default never reloads a model), and an explicit one must equal the loaded value."""
        if asked.auto_ctx:
            return self.auto_ctx and replace(asked, num_ctx=self.num_ctx) == self
        return replace(self, auto_ctx=False) == asked


def load_key(settings: Settings, model: ResolvedModel, options: Mapping[str, Any]) -> LoadKey:
    """The load a request asks for; InvalidRequest names a bad option."""
    if model.model_path is None:
        raise InvalidRequest(f"model {model.entry.name.display} has no model file")
    asked = options.get("num_ctx") or settings.context_length
    num_ctx = AUTO_NUM_CTX if asked is None else int(asked)
    if not 1 <= num_ctx <= MAX_NUM_CTX:
        raise InvalidRequest(f'option "num_ctx" must be from 1 to {MAX_NUM_CTX}, not {num_ctx}')
    num_gpu = options.get("num_gpu")
    num_threads = int(options["num_thread"]) if options.get("num_thread") else None
    most = max(MAX_THREADS, os.cpu_count() or 1)
    if num_threads is not None and not 1 <= num_threads <= most:
        raise InvalidRequest(f'option "num_thread" must be from 1 to {most}, not {num_threads}')
    try:
        cache_type = parse_cache_type(options.get("kv_cache_type", ""))
        flash_attention = parse_switch(options.get("flash_attention"))
    except ValueError as exc:
        raise InvalidRequest(f"options: {exc}") from None
    backend = LLAMA_CPP
    if model.config.model_format in DIRECTORY_FORMATS:
        backend = EXLLAMAV2
        if model.adapter_paths:  # first: installing exllamav2 would not help
            raise NotSupported(
                f"model {model.entry.name.display} has LoRA adapters, which olla applies to "
                "GGUF models only (llama.cpp), not to EXL2 or safetensors ones: merge the "
                "adapter into the weights before converting (PEFT's merge_and_unload), or "
                "build the model on its GGUF"
            )
        check_exllamav2(model.entry.name.display, model.config.model_format)
    return LoadKey(
        backend=backend,
        model_path=str(model.model_path),
        adapter_paths=tuple(str(path) for path in model.adapter_paths),
        projector_path=str(model.projector_path) if model.projector_path else "",
        num_ctx=num_ctx,
        auto_ctx=asked is None,
        # Ollama's num_gpu: layers to offload; -1 (or absent) lets olla choose
        num_gpu=None if num_gpu is None or int(num_gpu) < 0 else int(num_gpu),
        num_threads=num_threads,
        cache_type=cache_type or settings.kv_cache_type,
        flash_attention=settings.flash_attention if flash_attention is None else flash_attention,
    )
