"""Placement arithmetic against made-up GPUs, and the budgets' forms."""

from __future__ import annotations

import pytest

from olla.runtime.estimate import ModelShape, estimate
from olla.runtime.placement import GPU_OVERHEAD, LoadPlan, place
from olla.units import Budget

MiB = 2**20
GiB = 2**30
PLAN = LoadPlan(num_ctx=4096, num_parallel=4, cache_type="f16", flash_attention=True)
# an 8B-like shape: 32 layers of 200 MiB, 500 MiB embeddings and head; 4096 x 4 x 1 KiB KV a layer
SHAPE = ModelShape(
    layers=32,
    embedding=4096,
    heads=32,
    kv_heads=8,
    key_length=32,
    value_length=32,
    feed_forward=14336,
    vocab=128256,
    layer_weights=(200 * MiB,) * 32,
    input_weights=500 * MiB,
    head_weights=500 * MiB,
    norm_weights=16 * 1024,
)


def test_everything_goes_on_the_gpu_when_it_fits() -> None:
    placement = place(SHAPE, PLAN, [24 * GiB])
    # as llama.cpp counts: 32 blocks and the output layer
    assert (placement.gpu_layers, placement.layers, placement.gpu) == (33, 33, 0)
    memory = placement.memory
    # in RAM: the input embeddings, the host's small compute buffer and the logits' output buffer
    host_compute = 512 * 4096 * 4 * 3
    assert placement.ram == 500 * MiB + host_compute + 128256 * 4 * 4
    assert memory.gpu == 32 * 200 * MiB + 500 * MiB + 16 * 1024 + memory.kv_cache + (
        memory.compute - host_compute
    )
    assert placement.vram == memory.gpu + GPU_OVERHEAD


def test_as_many_layers_as_fit_and_no_more() -> None:
    for room in (3 * GiB, 5 * GiB, 7 * GiB):
        placement = place(SHAPE, PLAN, [room])
        assert 0 < placement.gpu_layers < 33
        assert placement.vram <= room
        bigger = estimate(SHAPE, 4096, 4, flash_attention=True, gpu_layers=placement.gpu_layers + 1)
        assert bigger.gpu + GPU_OVERHEAD > room


def test_a_gpu_too_small_for_one_layer_leaves_the_model_on_the_cpu() -> None:
    placement = place(SHAPE, PLAN, [512 * MiB])
    assert (placement.gpu_layers, placement.gpu, placement.vram) == (0, None, 0)
    assert placement.memory.gpu == 0 and placement.describe() == "CPU"


def test_no_gpu_means_the_cpu_and_num_gpu_cannot_change_that() -> None:
    assert place(SHAPE, PLAN, [], num_gpu=99).gpu_layers == 0


def test_the_gpu_with_the_most_room_is_chosen_and_num_gpu_is_obeyed() -> None:
    assert place(SHAPE, PLAN, [2 * GiB, 30 * GiB, 8 * GiB]).gpu == 1
    forced = place(SHAPE, PLAN, [30 * GiB], num_gpu=4)
    assert (
        forced.gpu_layers == 4
        and forced.describe() == "GPU 0 (4 of 33 layers; the rest on the CPU)"
    )
    assert place(SHAPE, PLAN, [30 * GiB], num_gpu=1000).gpu_layers == 33


def test_offloading_moves_memory_it_does_not_make_it_disappear() -> None:
    cpu = estimate(SHAPE, 4096, 4, flash_attention=True)
    # llama.cpp offloads from the output end: the output layer, then the last 16 blocks
    half = estimate(SHAPE, 4096, 4, flash_attention=True, gpu_layers=17)
    assert half.kv_cache == cpu.kv_cache and half.weights == cpu.weights
    assert half.gpu == 16 * 200 * MiB + 500 * MiB + 16 * 1024 + cpu.kv_cache // 2 + cpu.compute


def test_a_tied_output_layer_gets_its_own_copy_on_the_gpu() -> None:
    tied = ModelShape(**{**SHAPE.__dict__, "head_weights": 0})
    cpu = estimate(tied, 4096, 4, flash_attention=True)
    one = estimate(tied, 4096, 4, flash_attention=True, gpu_layers=1)
    assert one.weights == cpu.weights + 500 * MiB  # token_embd stays in RAM for the input


@pytest.mark.parametrize(
    ("text", "total", "expected"),
    [
        ("75%", 16 * GiB, 12 * GiB),
        ("8GiB", 16 * GiB, 8 * GiB),
        ("512MB", GiB, 512_000_000),
        ("1073741824", 2 * GiB, GiB),
        ("64GiB", 16 * GiB, 16 * GiB),
        ("100%", GiB, GiB),
    ],
)
def test_budgets_are_bytes_sizes_or_shares(text: str, total: int, expected: int) -> None:
    assert Budget.parse(text).of(total) == expected


@pytest.mark.parametrize("text", ["0%", "150%", "lots", "-1GiB", "%"])
def test_a_bad_budget_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="budget"):
        Budget.parse(text)
