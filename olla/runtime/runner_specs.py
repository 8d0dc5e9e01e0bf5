"""The spec a runner starts with: a load key and a placement made into engine sizes and switches."""

from __future__ import annotations

from olla.config import Settings
from olla.runtime.load_key import LoadKey
from olla.runtime.placement import LoadPlan, Placement
from olla.wire.spec import RunnerSpec

# llama.cpp's KV cache on the CPU: bf16 measured no faster than f16 here (docs/benchmarks.md),
# and f16 keeps more mantissa bits, so f16 on both.
CPU_CACHE_TYPE = "f16"
GPU_CACHE_TYPE = "f16"


def load_plan(settings: Settings, key: LoadKey, on_gpu: bool) -> LoadPlan:
    """What the estimate needs to know of the load: context, sequences, cache type, attention."""
    cache_type = key.cache_type or (GPU_CACHE_TYPE if on_gpu else CPU_CACHE_TYPE)
    flash = flash_attention(key, cache_type)
    return LoadPlan(key.num_ctx, settings.num_parallel, cache_type, flash is not False)


def flash_attention(key: LoadKey, cache_type: str) -> bool | None:
    """As asked, else llama.cpp's choice (None: on where supported); a quantized V cache needs
    it on in llama.cpp."""
    if key.flash_attention is not None:
        return key.flash_attention
    return True if cache_type.startswith("q") else None


def kv_unified(settings: Settings, on_gpu: bool) -> bool:
    """As set, else one pool on a GPU: llama.cpp computes a batch of prompts of different
    lengths in one pass only then (a stream each: a pass per length; docs/gpu.md)."""
    unified = settings.kv_unified
    return on_gpu if unified is None else unified


def runner_spec(
    settings: Settings, key: LoadKey, placement: Placement, socket_path: str, name: str = ""
) -> RunnerSpec:
    """The spec of a runner for `key` (model `name`), placed at `placement`, listening on
    `socket_path`."""
    on_gpu = placement.gpu_layers > 0
    plan = load_plan(settings, key, on_gpu)
    return RunnerSpec(
        backend=key.backend,
        model_path=key.model_path,
        adapter_paths=key.adapter_paths,
        projector_path=key.projector_path,
        socket_path=socket_path,
        model_name=name,
        num_ctx=key.num_ctx,
        num_parallel=settings.num_parallel,
        kv_unified=kv_unified(settings, on_gpu),
        # num_thread, else OLLA_NUM_THREADS; None (0): the backend's default
        num_threads=key.num_threads or settings.num_threads or None,
        queue_timeout=max(settings.queue_timeout, 0.0),
        num_gpu_layers=placement.gpu_layers,
        main_gpu=placement.gpu,
        flash_attention=flash_attention(key, plan.cache_type),
        cache_type=plan.cache_type,
        debug=settings.debug,
    )
