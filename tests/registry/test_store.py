"""The Registry facade: listing, copy, delete and pruning of unreferenced blobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from olla.errors import ModelNotFound, NotFound
from olla.registry import manifests as mf
from olla.registry.names import ModelName
from olla.registry.store import UPLOAD_GRACE_S, Registry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def model(registry: Registry, name: str, payload: bytes) -> mf.Manifest:
    digest = registry.blobs.put_bytes(payload)
    config = registry.blobs.put_bytes(mf.ModelConfig(diff_ids=(digest,)).to_json())
    manifest = mf.Manifest(
        config=mf.Layer(mf.MEDIA_TYPE_CONFIG, config, registry.blobs.size(config)),
        layers=(mf.Layer(mf.MEDIA_TYPE_MODEL, digest, len(payload)),),
    )
    registry.write_manifest(ModelName.parse(name), manifest)
    return manifest


def test_list_copy_delete_and_prune(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    a = model(registry, "a", b"weights-a")
    model(registry, "ns/b:v1", b"weights-b")
    registry.copy(ModelName.parse("a"), ModelName.parse("c"))
    assert sorted(e.name.display for e in registry.list_models()) == [
        "a:latest",
        "c:latest",
        "ns/b:v1",
    ]
    assert registry.delete(ModelName.parse("a")) == []  # "c" still uses every blob of "a"
    removed = registry.delete(ModelName.parse("c"))
    assert sorted(removed) == sorted(a.blob_digests())  # b's blobs stay
    assert not (tmp_path / "manifests" / "registry.ollama.ai" / "library").exists()
    with pytest.raises(ModelNotFound):
        registry.delete(ModelName.parse("c"))


def test_uploads_are_protected_from_pruning_for_a_grace_period(tmp_path: Path) -> None:
    clock = Clock()
    registry = Registry(tmp_path, monotonic=clock)
    digest = registry.blobs.put_bytes(b"uploaded, create not yet called")
    registry.pin(digest)
    assert registry.prune() == []
    clock.now += UPLOAD_GRACE_S + 1
    assert registry.prune() == [digest]


def test_a_manifest_naming_a_missing_blob_is_refused(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    layer = mf.Layer(mf.MEDIA_TYPE_MODEL, "sha256:" + "b" * 64, 1)
    manifest = mf.Manifest(config=layer, layers=(layer,))
    with pytest.raises(NotFound, match="missing from the store"):
        registry.write_manifest(ModelName.parse("x"), manifest)
    assert registry.list_models() == []


def test_corrupt_manifests_are_skipped_in_listings(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    model(registry, "good", b"w")
    bad = tmp_path / "manifests" / "registry.ollama.ai" / "library" / "bad" / "latest"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    assert [e.name.display for e in registry.list_models()] == ["good:latest"]


def test_a_split_gguf_opens_through_links_llama_cpp_can_follow(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    parts = [registry.blobs.put_bytes(f"part {i}".encode()) for i in (1, 2, 3)]
    config = registry.blobs.put_bytes(b"{}")
    manifest = mf.Manifest(
        config=mf.Layer(mf.MEDIA_TYPE_CONFIG, config, 2),
        layers=tuple(mf.Layer(mf.MEDIA_TYPE_MODEL, d, 6) for d in parts),
    )
    registry.write_manifest(ModelName.parse("split"), manifest)
    path = registry.resolve(ModelName.parse("split")).model_path
    assert path is not None and path.name == "model-00001-of-00003.gguf"
    for i, digest in enumerate(parts, start=1):
        link = path.parent / f"model-{i:05d}-of-00003.gguf"
        assert link.read_bytes() == f"part {i}".encode()
        assert link.resolve() == registry.blobs.path(digest).resolve()
    assert registry.resolve(ModelName.parse("split")).model_path == path  # made once
