"""Pulling a model directory (EXL2, on a branch of its own) from a fake Hugging Face to a store."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from huggingface_hub import constants

from olla.errors import InvalidRequest, NotFound
from olla.registry import manifests as mf
from olla.registry.catalog import resolve_hub as resolve
from olla.registry.names import ModelName
from olla.registry.pull import _partial_path, run_pull
from olla.registry.pull_plan import PullPlan, RemoteFile, plan_pull
from olla.registry.store import Registry
from tests.fake_hf import FakeHub

REPO = "turbo/Tiny-Llama-exl2"
NAME = f"hf.co/{REPO}:4.0bpw"
CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 256,
    "max_position_embeddings": 2048,
    "quantization_config": {"quant_method": "exl2", "bits": 4.0},
}
BRANCH = {
    "config.json": json.dumps(CONFIG).encode(),
    "tokenizer.json": b'{"model": {"type": "BPE"}}',
    "tokenizer_config.json": b'{"chat_template": "{{ messages }}", "eos_token": "</s>"}',
    "output.safetensors": os.urandom(200_000),  # LFS, by its extension
    "README.md": b"# 4.0 bits per weight\n",
}
MODEL_FILES = ["config.json", "output.safetensors", "tokenizer.json", "tokenizer_config.json"]


@pytest.fixture(autouse=True)
def no_hf_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep huggingface-hub away from the user's token and offline setting."""
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    """An EXL2 repo as turboderp's: main has the README and measurement, `4.0bpw` the model, and
    `6.0bpw` a broken one (no weights)."""
    with FakeHub() as fake:
        fake.add_repo(REPO, {"README.md": b"# Tiny\n", "measurement.json": b"{}"})
        fake.add_repo(REPO, BRANCH, refs=("4.0bpw",), add_revision=True)
        no_weights = {k: v for k, v in BRANCH.items() if not k.endswith(".safetensors")}
        fake.add_repo(REPO, no_weights, refs=("6.0bpw",), add_revision=True)
        yield fake


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models")


def pull(hub: FakeHub, registry: Registry, text: str) -> tuple[mf.Manifest, list[dict[str, Any]]]:
    """Plan and run a pull as the daemon does; the manifest and the status lines."""
    lines: list[dict[str, Any]] = []
    name, origin = resolve(text)
    plan = plan_pull(name, origin, hub.url, None)
    return run_pull(plan, registry, lines.append, hub.url, None), lines


def config_of(registry: Registry, manifest: mf.Manifest) -> mf.ModelConfig:
    return mf.ModelConfig.from_json(registry.blobs.path(manifest.config.digest).read_bytes())


def test_a_branch_pulls_as_a_directory_of_files(hub: FakeHub, registry: Registry) -> None:
    name, origin = resolve(NAME)
    plan = plan_pull(name, origin, hub.url, None)
    assert plan.directory and plan.extras == ()
    assert plan.commit == hub.commit(REPO, "4.0bpw") and plan.origin.revision == "4.0bpw"
    assert [f.path for f in plan.model_files] == MODEL_FILES

    manifest, lines = pull(hub, registry, NAME)

    assert lines[-2:] == [{"status": "writing manifest"}, {"status": "success"}]
    assert [(layer.media_type, layer.name) for layer in manifest.layers] == [
        (mf.MEDIA_TYPE_FILE, path) for path in MODEL_FILES
    ]
    config = config_of(registry, manifest)
    assert (config.model_format, config.file_type, config.model_family) == (
        "exl2",
        "4.0bpw",
        "llama",
    )
    resolved = registry.resolve(ModelName.parse(NAME))
    assert resolved.model_path is not None and resolved.model_path.is_dir()
    got = {p.name: p.read_bytes() for p in resolved.model_path.iterdir()}
    assert got == {path: BRANCH[path] for path in MODEL_FILES}  # no README, no measurement
    assert not any((registry.root / "partial").rglob("*.part"))


def test_a_second_pull_downloads_nothing(hub: FakeHub, registry: Registry) -> None:
    first, _ = pull(hub, registry, NAME)
    assert hub.bytes_served == sum(len(BRANCH[path]) for path in MODEL_FILES)
    hub.reset_counters()

    again, lines = pull(hub, registry, NAME)

    assert again == first and lines[-1] == {"status": "success"}
    assert hub.bytes_served == 0
    # the small files kept in git were found in the store by their git blob id: not even a HEAD
    assert [r for r in hub.requests if "/resolve/" in r[1] or r[1].startswith("/cdn/")] == []


def test_a_branch_that_does_not_exist_is_not_found(hub: FakeHub) -> None:
    name, origin = resolve(f"hf.co/{REPO}:5.0bpw")
    with pytest.raises(NotFound, match=r"no branch or revision '5\.0bpw'"):
        plan_pull(name, origin, hub.url, None)


def test_a_branch_without_weights_says_what_it_lacks(hub: FakeHub) -> None:
    name, origin = resolve(f"hf.co/{REPO}:6.0bpw")
    with pytest.raises(NotFound) as missing:
        plan_pull(name, origin, hub.url, None)
    message = str(missing.value)
    assert f"hf.co/{REPO} at revision '6.0bpw' has no GGUF files and is not a model" in message
    assert "lacks weights (*.safetensors)" in message


def test_main_without_a_model_says_so(hub: FakeHub) -> None:
    name, origin = resolve(f"hf.co/{REPO}")
    with pytest.raises(NotFound, match=r"at revision 'main' has no GGUF files .* lacks config"):
        plan_pull(name, origin, hub.url, None)


def test_a_model_on_main_pulls_without_a_tag(hub: FakeHub, registry: Registry) -> None:
    hub.add_repo("plain/Tiny-Llama", {**BRANCH, "sub/tokenizer.json": b"{}"})
    hub.reset_counters()

    manifest, _ = pull(hub, registry, "hf.co/plain/Tiny-Llama")

    assert [layer.name for layer in manifest.layers] == sorted([*MODEL_FILES, "sub/tokenizer.json"])
    info_requests = [r for r in hub.requests if r[1].startswith("/api/models/")]
    assert len(info_requests) == 1  # main was asked once
    model_path = registry.resolve(ModelName.parse("hf.co/plain/Tiny-Llama")).model_path
    assert model_path is not None and (model_path / "sub" / "tokenizer.json").read_bytes() == b"{}"


def test_a_config_olla_cannot_load_stops_before_the_weights(
    hub: FakeHub, registry: Registry
) -> None:
    gptq = {**CONFIG, "quantization_config": {"quant_method": "gptq", "bits": 4}}
    hub.add_repo(
        REPO,
        {**BRANCH, "config.json": json.dumps(gptq).encode()},
        refs=("gptq",),
        add_revision=True,
    )

    with pytest.raises(InvalidRequest, match="gptq quantization is not supported"):
        pull(hub, registry, f"hf.co/{REPO}:gptq")

    assert "output.safetensors" not in hub.bytes_served_by_file
    assert registry.list_models() == []


def test_files_of_one_name_in_two_folders_download_apart(registry: Registry) -> None:
    name, origin = resolve(NAME)
    plan = PullPlan(name, origin, "0" * 40, (), (), directory=True)
    a, b = (RemoteFile(f"{d}/tokenizer.json", 2, None) for d in ("a", "b"))
    assert _partial_path(registry, plan, a) != _partial_path(registry, plan, b)
    assert _partial_path(registry, plan, a).parent == _partial_path(registry, plan, b).parent


def test_rm_removes_the_blobs_and_the_directory_of_links(hub: FakeHub, registry: Registry) -> None:
    manifest, _ = pull(hub, registry, NAME)
    name = ModelName.parse(NAME)
    links = registry.resolve(name).model_path
    assert links == registry.root / "dirs" / manifest.digest.removeprefix("sha256:")

    removed = registry.delete(name)

    assert sorted(removed) == sorted(manifest.blob_digests())
    assert not links.exists() and registry.blobs.digests() == []


def write_gguf(path: Path) -> Path:
    """A tiny GGUF that read_gguf_info accepts."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_head_count(2)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    w.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_gguf_repo_pulls_as_before(hub: FakeHub, registry: Registry, tmp_path: Path) -> None:
    gguf_file = write_gguf(tmp_path / "tiny-Q4_K_M.gguf")
    hub.add_repo(
        "o/Tiny-GGUF",
        {"tiny-Q4_K_M.gguf": gguf_file, "README.md": b"# Tiny\n", "config.json": b"{}"},
    )

    manifest, _ = pull(hub, registry, "hf.co/o/Tiny-GGUF")

    [layer] = manifest.layers
    assert (layer.media_type, layer.name) == (mf.MEDIA_TYPE_MODEL, None)
    assert config_of(registry, manifest).model_format == "gguf"
    model_path = registry.resolve(ModelName.parse("hf.co/o/Tiny-GGUF")).model_path
    assert model_path is not None and model_path.read_bytes() == gguf_file.read_bytes()
