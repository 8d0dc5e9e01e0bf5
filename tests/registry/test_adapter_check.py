"""LoRA adapters checked against their base at create: synthetic GGUFs, good and bad.

The adapters here are tensor infos with random values: they test the checks, not what an
adapter teaches a model.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np
import pytest

from olla.errors import InvalidRequest, NotSupported
from olla.registry import manifests as mf
from olla.registry.adapter_check import check_adapter
from olla.registry.create import create_model
from olla.registry.create_request import CreateRequest
from olla.registry.gguf_info import read_gguf_info
from olla.registry.names import ModelName
from olla.registry.store import Registry
from tests.model_dirs import model_files

REPO = Path(__file__).resolve().parents[2]
EMBD, FF, KV, VOCAB, RANK = 16, 32, 8, 12, 2
# numpy shapes (rows, columns), GGML's reversed: attn_q is [n_in 16, n_out 16]
BASE = {
    "token_embd.weight": (VOCAB, EMBD),
    "blk.0.attn_norm.weight": (EMBD,),
    "blk.0.attn_q.weight": (EMBD, EMBD),
    "blk.0.attn_v.weight": (KV, EMBD),
    "blk.0.ffn_down.weight": (EMBD, FF),
}
GOOD = {
    "blk.0.attn_q.weight.lora_a": (RANK, EMBD),
    "blk.0.attn_q.weight.lora_b": (EMBD, RANK),
    "blk.0.attn_v.weight.lora_a": (RANK, EMBD),
    "blk.0.attn_v.weight.lora_b": (KV, RANK),
    "blk.0.ffn_down.weight.lora_a": (RANK, FF),
    "blk.0.ffn_down.weight.lora_b": (EMBD, RANK),
}


def write(
    path: Path,
    tensors: Mapping[str, tuple[int, ...]],
    arch: str = "llama",
    general_type: str | None = "adapter",
    adapter_type: str | None = "lora",
) -> Path:
    """A GGUF of `tensors` (numpy shapes, zeros), with the given type keys where not None."""
    w = gguf.GGUFWriter(path, arch)
    if general_type is not None:
        w.add_type(general_type)
    if adapter_type is not None:
        w.add_string("adapter.type", adapter_type)
        w.add_float32("adapter.lora.alpha", 4.0)
    for name, shape in tensors.items():
        w.add_tensor(name, np.zeros(shape, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(tmp_path / "base.gguf", BASE, general_type="model", adapter_type=None)


def problem(base: Path, adapter: Path) -> str:
    with pytest.raises(InvalidRequest) as caught:
        check_adapter(read_gguf_info(adapter), read_gguf_info(base), "adapter a.gguf")
    assert caught.value.status == 400
    return str(caught.value)


def test_shapes_are_read_in_ggml_order(base: Path) -> None:
    shapes = read_gguf_info(base).tensor_shapes
    assert shapes["blk.0.attn_v.weight"] == (EMBD, KV)  # [n_in, n_out]
    assert shapes["blk.0.attn_norm.weight"] == (EMBD,)


def test_a_matching_adapter_passes(base: Path, tmp_path: Path) -> None:
    embd = {"token_embd.weight.lora_a": (VOCAB, RANK), "token_embd.weight.lora_b": (EMBD, RANK)}
    norm = {"blk.0.attn_norm.weight": (EMBD,)}  # llama.cpp skips norms in an adapter
    adapter = write(tmp_path / "a.gguf", {**GOOD, **embd, **norm})
    check_adapter(read_gguf_info(adapter), read_gguf_info(base), "adapter a.gguf")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"general_type": "model"},
            "adapter a.gguf is not an adapter: its general.type is 'model', not 'adapter'",
        ),
        ({"general_type": None}, "adapter a.gguf is not an adapter: its general.type is missing"),
        (
            {"adapter_type": "cvec"},
            "adapter a.gguf is not a LoRA adapter: its adapter.type is 'cvec', not 'lora'",
        ),
        (
            {"arch": "qwen2"},
            "adapter a.gguf is an adapter for the qwen2 architecture, and the base model is llama",
        ),
    ],
    ids=["a-model", "no-type", "control-vector", "architecture"],
)
def test_metadata_that_does_not_match(
    base: Path, tmp_path: Path, keys: dict[str, str | None], message: str
) -> None:
    adapter = write(tmp_path / "a.gguf", GOOD, **keys)  # type: ignore[arg-type]
    assert problem(base, adapter).startswith(message)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"blk.0.attn_v.weight.lora_b": (EMBD, RANK)},  # made for a model with 16 KV rows
            "adapter a.gguf does not fit the base model: blk.0.attn_v.weight is [16, 8] there, "
            "and the adapter's pair is lora_a [16, 2], lora_b [2, 16] (GGML order)",
        ),
        (
            {"blk.0.attn_q.weight.lora_a": (RANK, 2 * EMBD)},  # another embedding length
            "adapter a.gguf does not fit the base model: blk.0.attn_q.weight is [16, 16] there",
        ),
        (
            {"blk.0.attn_q.weight.lora_b": (EMBD, RANK + 1)},
            "adapter a.gguf: the ranks of blk.0.attn_q.weight's lora_a [16, 2] and lora_b [3, 16] "
            "differ",
        ),
        (
            {"blk.1.attn_q.weight.lora_a": (RANK, EMBD), "blk.1.attn_q.weight.lora_b": (EMBD, 2)},
            "adapter a.gguf changes blk.1.attn_q.weight, which the base model does not have",
        ),
        (
            {"blk.0.ffn_up.weight.lora_a": (RANK, EMBD)},
            "adapter a.gguf has no blk.0.ffn_up.weight.lora_b to pair with its other half",
        ),
        (
            {"blk.0.attn_q.weight": (EMBD, EMBD)},
            "adapter a.gguf has a tensor blk.0.attn_q.weight that is not half of a LoRA pair",
        ),
    ],
    ids=["kv-rows", "embedding", "rank", "no-such-weight", "half-pair", "full-weight"],
)
def test_tensors_that_do_not_match(
    base: Path, tmp_path: Path, change: dict[str, tuple[int, ...]], message: str
) -> None:
    adapter = write(tmp_path / "a.gguf", {**GOOD, **change})
    assert problem(base, adapter).startswith(message)


def test_the_synthetic_lora_script_fits_smollm2(smollm2_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora.gguf"
    script = [sys.executable, "scripts/synthetic_lora", "--rank", "4", "--out", str(out)]
    subprocess.run(script, cwd=REPO, check=True, capture_output=True)
    adapter, model = read_gguf_info(out), read_gguf_info(smollm2_gguf)
    check_adapter(adapter, model, "adapter lora.gguf")
    blocks = model.block_count or 0
    assert len(adapter.tensor_shapes) == 2 * 3 * blocks  # attn_q, attn_v, ffn_down of each
    assert adapter.tensor_shapes["blk.3.attn_v.weight.lora_a"] == (576, 4)
    assert adapter.tensor_shapes["blk.3.attn_v.weight.lora_b"] == (4, 192)
    assert (adapter.metadata["general.type"], adapter.metadata["adapter.type"]) == (
        "adapter",
        "lora",
    )


# create_model: the check comes before anything is stored


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models")


def test_create_refuses_a_mismatching_adapter(
    registry: Registry, base: Path, tmp_path: Path
) -> None:
    model = registry.blobs.put_file(base)
    bad = {**GOOD, "blk.0.attn_v.weight.lora_b": (EMBD, RANK)}
    adapter = registry.blobs.put_file(write(tmp_path / "a.gguf", bad))
    req = CreateRequest(
        model=ModelName.parse("x"), files={"m.gguf": model}, adapters={"a.gguf": adapter}
    )
    before, reports = registry.blobs.digests(), list[str]()
    with pytest.raises(InvalidRequest) as caught:
        create_model(registry, req, reports.append)
    assert str(caught.value).startswith("adapter a.gguf does not fit the base model")
    assert reports == [] and registry.blobs.digests() == before and not registry.list_models()


def test_create_stores_a_matching_adapter(registry: Registry, base: Path, tmp_path: Path) -> None:
    model = registry.blobs.put_file(base)
    adapter = registry.blobs.put_file(write(tmp_path / "a.gguf", GOOD))
    req = CreateRequest(
        model=ModelName.parse("x"), files={"m.gguf": model}, adapters={"a.gguf": adapter}
    )
    create_model(registry, req, lambda _: None)
    resolved = registry.resolve(ModelName.parse("x"))
    assert resolved.adapter_paths == (registry.blobs.path(adapter),)
    layers = resolved.entry.manifest.layers_of(mf.MEDIA_TYPE_ADAPTER)
    assert [layer.digest for layer in layers] == [adapter]


def test_an_adapter_on_a_directory_model_is_not_supported(
    registry: Registry, tmp_path: Path
) -> None:
    files = {name: registry.blobs.put_bytes(data) for name, data in model_files().items()}
    adapter = registry.blobs.put_file(write(tmp_path / "a.gguf", GOOD))
    req = CreateRequest(model=ModelName.parse("x"), files=files, adapters={"a.gguf": adapter})
    with pytest.raises(NotSupported) as caught:
        create_model(registry, req, lambda _: None)
    assert caught.value.status == 501
    assert "LoRA adapters apply to GGUF models only" in str(caught.value)
    assert "merge the adapter into the weights" in str(caught.value)


def test_a_new_adapter_goes_after_the_base_models_own(
    registry: Registry, base: Path, tmp_path: Path
) -> None:
    """As Ollama appends them: FROM a model with an adapter, plus an ADAPTER, keeps both."""
    model = registry.blobs.put_file(base)
    first = registry.blobs.put_file(write(tmp_path / "a.gguf", GOOD))
    only_q = {k: v for k, v in GOOD.items() if ".attn_q." in k}
    second = registry.blobs.put_file(write(tmp_path / "b.gguf", only_q))
    name, derived = ModelName.parse("x"), ModelName.parse("y")
    quiet = list[str]().append
    create_model(
        registry, CreateRequest(model=name, files={"m.gguf": model}, adapters={"a": first}), quiet
    )
    for adapters in ({"b": second}, {"a": first, "b": second}):  # one already there: kept once
        create_model(registry, CreateRequest(model=derived, from_="x", adapters=adapters), quiet)
        layers = registry.resolve(derived).entry.manifest.layers_of(mf.MEDIA_TYPE_ADAPTER)
        assert [layer.digest for layer in layers] == [first, second]
