"""A model's LoRA adapters in the daemon's load: the key, the runner's spec, the estimate.

Adapters here are synthetic GGUFs of the right names and sizes (zeros, or random from
scripts/synthetic_lora): they test the bookkeeping, not what an adapter teaches a model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from olla.backends.llama_cpp import parse_buffer_sizes
from olla.config import Settings
from olla.errors import NotSupported
from olla.registry.gguf_info import read_gguf_info
from olla.registry.store import ResolvedModel
from olla.runtime.estimate import ModelShape, estimate, with_adapters
from olla.runtime.load_key import load_key
from olla.runtime.manager import ModelManager
from olla.runtime.placement import Placement
from olla.runtime.runner_specs import runner_spec
from olla.wire.spec import RunnerSpec
from tests.backends.test_llama_lora import synthetic_lora
from tests.registry.test_adapter_check import write as write_adapter
from tests.runtime.test_manager import Machine, StubRunner, model, shape

MIB = 2**20


def adapted(name: str, *adapters: Path, model_format: str = "gguf") -> ResolvedModel:
    return replace(model(name, model_format), adapter_paths=adapters)


def test_adapters_are_part_of_the_load_key() -> None:
    settings = Settings()
    plain = load_key(settings, adapted("m"), {})
    one = load_key(settings, adapted("m", Path("/blobs/sha256-aa")), {})
    assert one.adapter_paths == ("/blobs/sha256-aa",) and plain.adapter_paths == ()
    assert one != plain  # a model re-created with another adapter reloads
    assert replace(one, adapter_paths=()) == plain


def test_an_exllamav2_model_with_adapters_is_not_supported() -> None:
    with pytest.raises(NotSupported) as caught:
        load_key(Settings(), adapted("exl2", Path("/blobs/a"), model_format="exl2"), {})
    message = str(caught.value)
    assert caught.value.status == 501
    assert message.startswith("model exl2:latest has LoRA adapters, which olla applies to GGUF")
    assert "merge the adapter into the weights before converting" in message


def test_the_runner_spec_carries_the_adapters_through_json() -> None:
    key = load_key(Settings(), adapted("m", Path("/b/one"), Path("/b/two")), {})
    placement = Placement(layers=11, gpu_layers=0, gpu=None, memory=estimate(shape(), 512, 1))
    spec = runner_spec(Settings(), key, placement, "/tmp/s.sock", "m:latest")
    assert spec.adapter_paths == ("/b/one", "/b/two")
    assert RunnerSpec.from_json(spec.to_json()) == spec


def test_lora_buffers_count_as_weights_where_they_sit() -> None:
    memory = parse_buffer_sizes(
        [
            "load_tensors:   CPU_Mapped model buffer size =    92.10 MiB\n",
            "llama_adapter_lora_init_impl:        CPU LoRA buffer size =     3.70 MiB\n",
            "llama_adapter_lora_init_impl:      CUDA0 LoRA buffer size =     1.00 MiB\n",
        ]
    )
    assert memory.weights == int(92.10 * MIB) + int(3.70 * MIB) + MIB
    assert memory.gpu == MIB


def test_an_adapters_tensors_go_to_the_layers_they_change(tmp_path: Path) -> None:
    lora = write_adapter(
        tmp_path / "a.gguf",
        {
            "blk.0.attn_q.weight.lora_a": (2, 256),  # 2 KiB of f32
            "blk.0.attn_q.weight.lora_b": (256, 2),
            "blk.9.ffn_down.weight.lora_a": (4, 256),  # 4 KiB
            "blk.9.ffn_down.weight.lora_b": (256, 4),
            "token_embd.weight.lora_a": (1000, 2),  # outside the blocks: 8000 + 2048 bytes
            "token_embd.weight.lora_b": (256, 2),
        },
    )
    base = shape()
    more = with_adapters(base, [str(lora)])
    assert more.layer_weights[0] - base.layer_weights[0] == 2 * 2048
    assert more.layer_weights[9] - base.layer_weights[9] == 2 * 4096
    assert more.layer_weights[1:9] == base.layer_weights[1:9]
    assert more.other_weights - base.other_weights == 8000 + 2048
    # offloaded, the last block's adapter goes to the GPU with it; on the CPU all is in RAM
    on_gpu = estimate(more, 512, 1, gpu_layers=2).gpu - estimate(base, 512, 1, gpu_layers=2).gpu
    assert on_gpu == 2 * 4096
    cpu = estimate(more, 512, 1).weights - estimate(base, 512, 1).weights
    assert cpu == 2 * 2048 + 2 * 4096 + 8000 + 2048


def test_the_estimate_counts_a_synthetic_lora_of_smollm2(
    smollm2_gguf: Path, tmp_path: Path
) -> None:
    lora = synthetic_lora(tmp_path / "lora.gguf", "--rank", "4")
    base = ModelShape.from_gguf(read_gguf_info(smollm2_gguf))
    more = with_adapters(base, [str(lora)])
    tensors = sum(read_gguf_info(lora).tensor_bytes.values())
    assert estimate(more, 1024, 1).weights - estimate(base, 1024, 1).weights == tensors
    assert 0.9 * lora.stat().st_size < tensors < lora.stat().st_size


async def test_the_manager_places_a_model_with_its_adapters(tmp_path: Path) -> None:
    lora = write_adapter(tmp_path / "a.gguf", {"blk.0.attn_q.weight.lora_a": (64, 256)})
    specs: list[RunnerSpec] = []

    def spawn(spec: RunnerSpec, name: str) -> StubRunner:
        specs.append(spec)
        return StubRunner(spec, name, [])

    manager = ModelManager(Settings(), spawn, resources=Machine(), shape_of=lambda _: shape())  # type: ignore[arg-type]
    try:
        plain = await manager.acquire(model("m"), {})
        await plain.release()
        lease = await manager.acquire(adapted("n", lora), {})
        await lease.release()
        assert specs[-1].adapter_paths == (str(lora),)
        memory = [m.placement.memory for m in (plain.model, lease.model) if m.placement]
        assert memory[1].weights - memory[0].weights == 64 * 256 * 4
    finally:
        await manager.close()
