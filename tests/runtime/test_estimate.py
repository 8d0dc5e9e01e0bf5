"""Memory estimates from the GGUF against what llama.cpp really allocates for the default model."""

from __future__ import annotations

from pathlib import Path

import pytest

from olla.backends.llama_cpp import parse_buffer_sizes
from olla.registry.gguf_info import read_gguf_info
from olla.runner.build import build
from olla.runtime.estimate import ModelShape, estimate
from olla.wire.spec import RunnerSpec

MIB = 2**20


def test_the_shape_of_smollm2(smollm2_gguf: Path) -> None:
    shape = ModelShape.from_gguf(read_gguf_info(smollm2_gguf))
    assert (shape.layers, shape.heads, shape.kv_heads, shape.key_length) == (30, 9, 3, 64)
    assert shape.vocab == 49152 and shape.feed_forward == 1536
    assert len(shape.layer_weights) == 30 and min(shape.layer_weights) > 0
    file_size = smollm2_gguf.stat().st_size
    tensors = sum(shape.layer_weights) + shape.input_weights + shape.norm_weights
    assert 0.9 * file_size < tensors < file_size
    # tied embeddings: no output.weight; on a GPU the output layer gets its own copy
    assert shape.head_weights == 0 and shape.output_layer == shape.input_weights + 576 * 4


@pytest.mark.parametrize("flash", [False, True])
@pytest.mark.parametrize(("num_ctx", "num_parallel"), [(1024, 1), (8192, 2), (2560, 4)])
def test_the_estimate_is_within_10_percent_of_the_load(
    smollm2_gguf: Path, num_ctx: int, num_parallel: int, flash: bool
) -> None:
    spec = RunnerSpec(
        model_path=str(smollm2_gguf),
        socket_path="/unused",
        num_ctx=num_ctx,
        num_parallel=num_parallel,
        num_threads=2,
        flash_attention=flash,
    )
    backend, _ = build(spec)
    try:
        actual = backend.memory
    finally:
        backend.close()
    shape = ModelShape.from_gguf(read_gguf_info(smollm2_gguf))
    guess = estimate(shape, num_ctx, num_parallel, flash_attention=flash)
    assert actual.weights > 80 * MIB and actual.kv_cache > 0 and actual.compute > 0
    assert abs(guess.total - actual.total) <= 0.1 * actual.total, (guess, actual)
    assert abs(guess.kv_cache - actual.kv_cache) <= 0.01 * actual.kv_cache


def test_buffer_sizes_are_read_from_llama_cpp_log_lines() -> None:
    lines = [
        "load_tensors:   CPU_Mapped model buffer size =    92.10 MiB\n",
        "load_tensors:        CUDA0 model buffer size =   500.00 MiB\n",
        "load_tensors:   CPU_REPACK model buffer size =   445.50 MiB\n",
        "llama_context:        CPU  output buffer size =     0.75 MiB\n",
        "llama_kv_cache:      CUDA0 KV buffer size =   360.00 MiB\n",
        "sched_reserve:      CUDA0 compute buffer size =    99.38 MiB\n",
        "sched_reserve:  CUDA_Host compute buffer size =     9.00 MiB\n",
        "print_info: n_ctx = 4096\n",
    ]
    memory = parse_buffer_sizes(lines)
    assert memory.weights == int(92.10 * MIB) + 500 * MIB
    assert memory.repacked == int(445.5 * MIB)  # a copy of mapped tensors: not in the total
    assert memory.total == memory.weights + memory.kv_cache + memory.compute + memory.output
    assert memory.kv_cache == 360 * MIB and memory.output == int(0.75 * MIB)
    assert memory.compute == int(99.38 * MIB) + 9 * MIB
    # on the GPU: the CUDA0 buffers, not the CPU nor the pinned host (CUDA_Host) ones
    assert memory.gpu == 500 * MIB + 360 * MIB + int(99.38 * MIB)
