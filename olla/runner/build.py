"""Backend wiring: a runner's spec -> a loaded model and the engine that steps it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from olla.backends.choice import EXLLAMAV2
from olla.engine.constraint import Constraint
from olla.engine.engine import Engine
from olla.engine.pacing import PrefillPacer
from olla.engine.sampling import Sampler
from olla.engine.stepper import Stepper
from olla.errors import NotSupported
from olla.memory import Memory
from olla.wire.spec import RunnerSpec

if TYPE_CHECKING:
    from olla.backends.llama_vision import Projector

_GPU_PREFILL_SEQS = 16  # prompts one step may take on a GPU


class ModelHost(Protocol):
    """What the runner uses of a loaded model beside stepping: a llama.cpp `Backend`, or
    exllamav2's `Exl2Model`."""

    vocab_size: int
    memory: Memory
    can_shift: bool  # a full context can shift (Submit.shift); else a sequence ends there

    def tokenize(self, text: str, add_special: bool) -> list[int]: ...

    def token_bytes(self, token: int) -> bytes: ...

    @property
    def embed_limit(self) -> int: ...

    def embed(self, tokens: list[int]) -> Any: ...

    def constraint(self, fmt: Any) -> Constraint: ...

    def close(self) -> None: ...


def build(spec: RunnerSpec) -> tuple[ModelHost, Stepper]:
    """Load the model with the spec's backend and make its engine, sized from the spec."""
    if spec.backend == EXLLAMAV2:
        from olla.backends import exllamav2_model

        if spec.adapter_paths:  # the daemon refuses these first (runtime/load_key.py)
            raise NotSupported("LoRA adapters apply to GGUF models only, not on exllamav2")

        return exllamav2_model.load(Path(spec.model_path), spec.num_ctx, spec.num_parallel)
    return build_llama_cpp(spec)


def load_projector(spec: RunnerSpec, host: ModelHost) -> Projector | None:
    """The spec's vision projector, loaded beside its model (on the GPU when the model's layers
    are), or None when it has none."""
    if not spec.projector_path:
        return None
    from olla.backends.llama_cpp import LlamaCppBackend

    if not isinstance(host, LlamaCppBackend):
        raise NotSupported("vision projectors work with GGUF models only")
    return host.projector(Path(spec.projector_path), use_gpu=spec.num_gpu_layers > 0)


def build_llama_cpp(spec: RunnerSpec) -> tuple[ModelHost, Engine]:
    """A llama.cpp backend and olla's engine over it."""
    from olla.backends.llama_cpp import LlamaCppBackend, LlamaCppConfig

    num_streams = min(spec.num_parallel, 256)  # llama.cpp's most sequences
    if spec.kv_unified:
        # Idle slots keep finished prompts' cells for prefix reuse, so give more slots than
        # streams, and idle prefixes up to one context's worth: a long shared system prompt
        # stays cached, while the cells every decode row's attention must skip stay few.
        num_slots = min(2 * spec.num_parallel, 256)
        max_cached_blocks: int | None = -(-spec.num_ctx // spec.block_size)
    else:
        # A stream per slot, each a context long; idle cells cost other streams nothing.
        num_slots = num_streams
        max_cached_blocks = None
    backend = LlamaCppBackend(
        LlamaCppConfig(
            model_path=Path(spec.model_path),
            adapter_paths=tuple(Path(path) for path in spec.adapter_paths),
            num_cells=spec.num_ctx * num_streams,  # either way, a context per stream
            num_slots=num_slots,
            max_batch_tokens=spec.max_batch_tokens,
            num_threads=spec.num_threads,
            num_gpu_layers=spec.num_gpu_layers,
            main_gpu=spec.main_gpu,
            flash_attention=spec.flash_attention,
            cache_type=spec.cache_type,
            kv_unified=spec.kv_unified,
            verbose=spec.debug,
        )
    )
    engine = Engine(
        backend,
        # llama.cpp's threads idle between decodes: the host argmax may take as many
        Sampler(backend.vocab_size, threads=min(8, spec.num_threads or os.cpu_count() or 1)),
        block_size=spec.block_size,
        max_num_seqs=num_streams,
        max_batch_tokens=spec.max_batch_tokens,
        max_cached_blocks=max_cached_blocks,
        # on a CPU a prompt token costs the same in any batch, so prompts go in one per step
        # (the first ones answer sooner); on a GPU a batch of prompts costs little more than one
        max_prefill_seqs=1 if spec.num_gpu_layers == 0 else _GPU_PREFILL_SEQS,
        pacer=PrefillPacer(),
        queue_timeout=spec.queue_timeout,
        max_model_len=spec.num_ctx,  # a sequence's context, where it shifts; unified or not
    )
    return backend, engine
