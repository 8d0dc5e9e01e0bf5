"""A model's vision projector in the daemon's load: the key, the runner's spec, the estimate
(its weights and encode buffer, on the GPU with the model or in RAM) and the placement."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from olla.config import Settings
from olla.registry.gguf_info import read_gguf_info
from olla.registry.store import ResolvedModel
from olla.runtime.estimate import ProjectorShape, estimate, with_projector
from olla.runtime.load_key import load_key
from olla.runtime.manager import ModelManager
from olla.runtime.placement import Placement, place
from olla.runtime.runner_specs import runner_spec
from olla.wire.spec import RunnerSpec
from tests.runtime.test_manager import Machine, StubRunner, model, shape
from tests.runtime.test_placement import PLAN
from tests.tiny_projector import write_projector

MIB = 2**20
# SmolVLM-256M's encoder as scripts/synthetic_mmproj writes it: 12 layers, 181.22 MiB of tensors
SIGLIP = ProjectorShape(
    weights=190_018_560, patches=1024, embedding=768, feed_forward=3072, heads=12
)


def seeing(name: str, projector: Path) -> ResolvedModel:
    return replace(model(name), projector_path=projector)


def test_the_projector_is_part_of_the_load_key_and_the_spec() -> None:
    key = load_key(Settings(), seeing("m", Path("/blobs/sha256-pp")), {})
    assert key.projector_path == "/blobs/sha256-pp"
    assert key != load_key(Settings(), model("m"), {})  # another projector reloads the model
    placement = Placement(layers=11, gpu_layers=0, gpu=None, memory=estimate(shape(), 512, 1))
    spec = runner_spec(Settings(), key, placement, "/tmp/s.sock", "m:latest")
    assert spec.projector_path == "/blobs/sha256-pp"
    assert RunnerSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(("flash", "mib"), [(True, 21.0), (False, 60.0)])
def test_the_encode_buffer_is_what_libmtmd_reserved(flash: bool, mib: float) -> None:
    # what llama-cpp-python 0.3.36's libmtmd logged ("CPU compute buffer size") for
    # scripts/synthetic_mmproj's projector beside SmolLM2-135M, flash attention on and off
    assert SIGLIP.compute(flash) == mib * MIB


def test_the_shape_is_read_from_the_projector_gguf(tmp_path: Path) -> None:
    info = read_gguf_info(write_projector(tmp_path / "p.gguf"))
    projector = ProjectorShape.from_gguf(info)
    assert projector == replace(SIGLIP, weights=sum(info.tensor_bytes.values()))


@pytest.mark.parametrize("gpu_layers", [0, 3, 11])
def test_the_estimate_grows_by_the_projector_where_it_sits(gpu_layers: int) -> None:
    base = shape()
    seen = replace(base, projector=SIGLIP)
    before = estimate(base, 512, 1, flash_attention=True, gpu_layers=gpu_layers)
    after = estimate(seen, 512, 1, flash_attention=True, gpu_layers=gpu_layers)
    grown = SIGLIP.weights + SIGLIP.compute(True)
    assert after.total - before.total == grown
    assert (after.weights - before.weights, after.compute - before.compute) == (
        SIGLIP.weights,
        SIGLIP.compute(True),
    )
    assert after.gpu - before.gpu == (grown if gpu_layers else 0)  # libmtmd's use_gpu


def test_the_placement_makes_room_for_the_projector() -> None:
    base = shape()
    whole = place(base, PLAN, [10**12]).vram
    room = whole + SIGLIP.weights  # everything but the encode buffer
    assert place(base, PLAN, [room]).gpu_layers == base.layers + 1
    seen = place(replace(base, projector=SIGLIP), PLAN, [room])
    assert 0 < seen.gpu_layers < base.layers + 1  # a layer less or more moves to the CPU
    assert seen.vram <= room


async def test_the_manager_counts_the_projector_file(tmp_path: Path) -> None:
    projector = write_projector(tmp_path / "p.gguf")
    specs: list[RunnerSpec] = []

    def spawn(spec: RunnerSpec, name: str) -> StubRunner:
        specs.append(spec)
        return StubRunner(spec, name, [])

    manager = ModelManager(Settings(), spawn, resources=Machine(), shape_of=lambda _: shape())  # type: ignore[arg-type]
    try:
        plain = await manager.acquire(model("m"), {})
        await plain.release()
        lease = await manager.acquire(seeing("n", projector), {})
        await lease.release()
        assert specs[-1].projector_path == str(projector)
        memory = [m.placement.memory for m in (plain.model, lease.model) if m.placement]
        expected = with_projector(shape(), str(projector)).projector
        assert expected is not None
        assert memory[1].weights - memory[0].weights == expected.weights
    finally:
        await manager.close()
