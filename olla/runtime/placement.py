"""Where a model goes: all on one GPU when it fits, else as many layers as fit, else the CPU.

The placement is worked out against what olla could have on the machine (its budgets, less what
other programs hold), not against what other models hold at the moment, so a model lands the
same way every time; the manager then makes room for it, evicting idle models or waiting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from olla.backends.choice import exllamav2_pages
from olla.errors import NotSupported
from olla.memory import Memory
from olla.runtime.estimate import DirShape, ModelShape, Shape, estimate, estimate_directory

# What a process on a GPU holds beyond llama.cpp's buffers (CUDA context, cuBLAS workspace):
# nvidia-smi less llama.cpp's buffers was 532 and 531 MiB on an H100 (docs/gpu.md).
GPU_OVERHEAD = 540 * 2**20


@dataclass(frozen=True)
class LoadPlan:
    """What the runner is asked to load: the shapes of its cache and how it is split."""

    num_ctx: int
    num_parallel: int
    cache_type: str
    flash_attention: bool  # as the estimate assumes it (auto counts as on)


@dataclass(frozen=True)
class Placement:
    """Layers on the GPU (of `layers`), which GPU, and the memory it takes where.

    Layers count as llama.cpp's n_gpu_layers (and Ollama's num_gpu) do: the blocks and the
    output layer, offloaded from the output end.
    """

    layers: int  # blocks + 1
    gpu_layers: int
    gpu: int | None  # device index; None on the CPU
    memory: Memory  # the estimate; `memory.gpu` is the part on the GPU

    @property
    def ram(self) -> int:
        """Bytes in RAM."""
        return self.memory.total - self.memory.gpu

    @property
    def vram(self) -> int:
        """Bytes on the GPU, with the process's own overhead there."""
        return self.memory.gpu + GPU_OVERHEAD if self.gpu_layers else 0

    def describe(self) -> str:
        if not self.gpu_layers:
            return "CPU"
        where = f"GPU {self.gpu}"
        if self.gpu_layers == self.layers:
            return f"{where} (all {self.layers} layers)"
        return f"{where} ({self.gpu_layers} of {self.layers} layers; the rest on the CPU)"


def place(
    shape: ModelShape,
    plan: LoadPlan,
    gpu_room: Sequence[int],
    num_gpu: int | None = None,
) -> Placement:
    """Place the model given each GPU's room in bytes (index = device); `num_gpu` overrides.

    Uses the GPU with the most room: the whole model when it fits there, else the most layers
    that fit, else none. RAM is not a choice here: whatever is not on the GPU is in RAM.
    """
    device = max(range(len(gpu_room)), key=lambda i: gpu_room[i], default=None)

    def at(layers: int) -> Placement:
        memory = estimate(
            shape,
            num_ctx=plan.num_ctx,
            num_parallel=plan.num_parallel,
            cache_type=plan.cache_type,
            flash_attention=plan.flash_attention,
            gpu_layers=layers,
        )
        return Placement(shape.layers + 1, layers, device if layers else None, memory)

    if device is None:
        return at(0)
    if num_gpu is not None:
        return at(min(max(num_gpu, 0), shape.layers + 1))
    room = gpu_room[device]
    best = at(0)
    # the GPU part grows with each layer, so the first that does not fit ends the search
    for layers in range(1, shape.layers + 2):
        candidate = at(layers)
        if candidate.vram > room:
            break
        best = candidate
    return best


def place_directory(shape: DirShape, plan: LoadPlan, gpu_room: Sequence[int]) -> Placement:
    """An exllamav2 model goes whole onto the GPU with the most room; it cannot run on a CPU."""
    if not gpu_room:
        raise NotSupported(
            f"this is an {shape.info.model_format} model, which runs on exllamav2 on a CUDA GPU, "
            "and olla sees no GPU here; use a GGUF of the model on this machine"
        )
    device = max(range(len(gpu_room)), key=lambda i: gpu_room[i])
    memory = estimate_directory(shape, plan.num_ctx, plan.num_parallel, exllamav2_pages())
    layers = shape.info.layers + 1
    return Placement(layers, layers, device, memory)


def place_model(
    shape: Shape,
    gpu_plan: LoadPlan,
    cpu_plan: LoadPlan,
    gpu_room: Sequence[int],
    num_gpu: int | None = None,
) -> Placement:
    """Either kind of model: a directory by `place_directory`; a GGUF by `place`, and with no
    layer on a GPU, sized again with `cpu_plan` (the CPU's cache type and attention may differ)."""
    if isinstance(shape, DirShape):
        return place_directory(shape, gpu_plan, gpu_room)
    placement = place(shape, gpu_plan, gpu_room, num_gpu)
    return placement if placement.gpu_layers else place(shape, cpu_plan, [], 0)
