"""Tests for olla.registry.manifests: Ollama's manifest and config JSON, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from olla.errors import InvalidDigest, InvalidRequest
from olla.registry import manifests as mf
from olla.registry.manifests import Layer, Manifest, ModelConfig, write_atomic


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


D_CONFIG = digest_of(b"config")
D_MODEL = digest_of(b"model")
D_TEMPLATE_1 = digest_of(b"template 1")
D_TEMPLATE_2 = digest_of(b"template 2")
D_LICENSE_1 = digest_of(b"license 1")
D_LICENSE_2 = digest_of(b"license 2")


def sample() -> Manifest:
    return Manifest(
        config=Layer(mf.MEDIA_TYPE_CONFIG, D_CONFIG, 100),
        layers=(
            Layer(mf.MEDIA_TYPE_MODEL, D_MODEL, 1000, from_="/models/blobs/x", name="m.gguf"),
            Layer(mf.MEDIA_TYPE_TEMPLATE, D_TEMPLATE_1, 10),
            Layer(mf.MEDIA_TYPE_LICENSE, D_LICENSE_1, 20),
            Layer(mf.MEDIA_TYPE_LICENSE, D_LICENSE_2, 30),
            Layer(mf.MEDIA_TYPE_TEMPLATE, D_TEMPLATE_2, 40),
        ),
    )


def test_layer_media_types() -> None:
    assert len(mf.LAYER_MEDIA_TYPES) == 9
    assert mf.MEDIA_TYPE_CONFIG not in mf.LAYER_MEDIA_TYPES
    assert {
        mf.MEDIA_TYPE_MODEL,
        mf.MEDIA_TYPE_ADAPTER,
        mf.MEDIA_TYPE_PROJECTOR,
    } <= mf.LAYER_MEDIA_TYPES


def test_to_json_shape_and_key_order() -> None:
    m = Manifest(
        Layer(mf.MEDIA_TYPE_CONFIG, D_CONFIG, 5), (Layer(mf.MEDIA_TYPE_MODEL, D_MODEL, 7),)
    )
    assert m.to_json() == (
        b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
        b'"config":{"mediaType":"application/vnd.docker.container.image.v1+json",'
        b'"digest":"' + D_CONFIG.encode() + b'","size":5},'
        b'"layers":[{"mediaType":"application/vnd.ollama.image.model",'
        b'"digest":"' + D_MODEL.encode() + b'","size":7}]}'
    )


def test_round_trip_is_byte_identical() -> None:
    original = sample()
    data = original.to_json()
    parsed = Manifest.from_json(data)
    assert parsed == original
    assert parsed.to_json() == data


def test_from_json_normalizes_foreign_formatting() -> None:
    # Ollama writes pretty or differently ordered JSON; it parses to the same manifest.
    obj = json.loads(sample().to_json())
    obj["layers"][1]["digest"] = D_TEMPLATE_1.replace(":", "-").upper().replace("SHA256", "sha256")
    obj["extra"] = {"ignored": True}
    pretty = json.dumps(obj, indent=2, sort_keys=True).encode()
    assert Manifest.from_json(pretty) == sample()


def test_digest_is_stable_and_content_sensitive() -> None:
    a, b = sample(), sample()
    assert a.digest == b.digest == digest_of(a.to_json())
    assert a.digest.startswith("sha256:") and len(a.digest) == 71
    changed = Manifest(a.config, a.layers[:-1])
    assert changed.digest != a.digest


def test_total_size_and_blob_digests() -> None:
    m = sample()
    assert m.total_size == 100 + 1000 + 10 + 20 + 30 + 40
    assert m.blob_digests() == {
        D_CONFIG,
        D_MODEL,
        D_TEMPLATE_1,
        D_TEMPLATE_2,
        D_LICENSE_1,
        D_LICENSE_2,
    }


def test_layer_lookup_later_layers_override() -> None:
    m = sample()
    template = m.layer(mf.MEDIA_TYPE_TEMPLATE)
    assert template is not None and template.digest == D_TEMPLATE_2
    assert [x.digest for x in m.layers_of(mf.MEDIA_TYPE_LICENSE)] == [D_LICENSE_1, D_LICENSE_2]
    assert m.layer(mf.MEDIA_TYPE_SYSTEM) is None
    assert m.layers_of(mf.MEDIA_TYPE_ADAPTER) == []


def test_layers_given_as_list_are_stored_as_tuple() -> None:
    layers = [Layer(mf.MEDIA_TYPE_MODEL, D_MODEL, 2)]
    m = Manifest(Layer(mf.MEDIA_TYPE_CONFIG, D_CONFIG, 1), layers)  # type: ignore[arg-type]
    assert isinstance(m.layers, tuple)
    hash(m)


def test_layer_from_and_name_only_when_set() -> None:
    plain = Layer(mf.MEDIA_TYPE_MODEL, D_MODEL, 3)
    assert plain.to_dict() == {"mediaType": mf.MEDIA_TYPE_MODEL, "digest": D_MODEL, "size": 3}
    full = Layer(mf.MEDIA_TYPE_MODEL, D_MODEL, 3, from_="/p/sha256-x", name="a.gguf")
    assert full.to_dict() == {**plain.to_dict(), "from": "/p/sha256-x", "name": "a.gguf"}
    assert list(full.to_dict()) == ["mediaType", "digest", "size", "from", "name"]
    only_name = Layer(mf.MEDIA_TYPE_MODEL, D_MODEL, 3, name="a.gguf")
    assert "from" not in only_name.to_dict()
    assert Layer.from_dict(full.to_dict()) == full
    # Ollama's `omitempty`: an empty string means "not set".
    assert Layer.from_dict({**plain.to_dict(), "from": "", "name": None}) == plain


def test_layer_canonicalizes_digest() -> None:
    layer = Layer(mf.MEDIA_TYPE_MODEL, D_MODEL.replace(":", "-").upper().replace("SHA", "sha"), 1)
    assert layer.digest == D_MODEL
    with pytest.raises(InvalidDigest):
        Layer(mf.MEDIA_TYPE_MODEL, "sha256:../../etc", 1)


@pytest.mark.parametrize(
    ("layer", "field"),
    [
        ("not an object", "layer"),
        ({"digest": D_MODEL, "size": 1}, "mediaType"),
        ({"mediaType": 7, "digest": D_MODEL, "size": 1}, "mediaType"),
        ({"mediaType": "x", "size": 1}, "digest"),
        ({"mediaType": "x", "digest": "sha256:abc", "size": 1}, "digest"),
        ({"mediaType": "x", "digest": D_MODEL}, "size"),
        ({"mediaType": "x", "digest": D_MODEL, "size": -1}, "size"),
        ({"mediaType": "x", "digest": D_MODEL, "size": "12"}, "size"),
        ({"mediaType": "x", "digest": D_MODEL, "size": True}, "size"),
        ({"mediaType": "x", "digest": D_MODEL, "size": 1.5}, "size"),
        ({"mediaType": "x", "digest": D_MODEL, "size": 1, "from": 3}, "from"),
        ({"mediaType": "x", "digest": D_MODEL, "size": 1, "name": ["a"]}, "name"),
    ],
)
def test_layer_from_dict_rejects_bad_fields(layer: object, field: str) -> None:
    with pytest.raises(InvalidRequest, match=field) as ei:
        Layer.from_dict(layer)  # type: ignore[arg-type]
    assert ei.value.status == 400


def test_layer_from_dict_keeps_unknown_media_types() -> None:
    layer = Layer.from_dict(
        {"mediaType": "application/vnd.ollama.image.projector", "digest": D_MODEL, "size": 9}
    )
    assert layer.media_type == "application/vnd.ollama.image.projector"


def _corrupt(**changes: object) -> bytes:
    obj = json.loads(sample().to_json())
    for key, value in changes.items():
        if value is None:
            del obj[key]
        else:
            obj[key] = value
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe garbage", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b"null", "expected a JSON object"),
        (_corrupt(schemaVersion=1), "schemaVersion must be 2"),
        (_corrupt(schemaVersion="2"), "schemaVersion must be 2"),
        (_corrupt(schemaVersion=None), "schemaVersion must be 2"),
        (_corrupt(mediaType=5), "mediaType must be a string"),
        (_corrupt(config=None), "'config' is missing"),
        (_corrupt(config=[]), "config: layer must be a JSON object"),
        (_corrupt(layers=None), "'layers' must be a list"),
        (_corrupt(layers={"a": 1}), "'layers' must be a list"),
        (_corrupt(layers=[{"mediaType": "x", "digest": "sha256:00", "size": 1}]), r"layers\[0\]"),
        (_corrupt(layers=[{"mediaType": "x", "digest": D_MODEL, "size": -5}]), r"layers\[0\]"),
    ],
)
def test_corrupt_manifests_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as ei:
        Manifest.from_json(data)
    assert str(ei.value).startswith("corrupt manifest: ")
    assert ei.value.status == 400


def test_manifest_without_layers_or_media_type_is_accepted() -> None:
    data = json.dumps({"schemaVersion": 2, "config": sample().config.to_dict(), "layers": []})
    m = Manifest.from_json(data.encode())
    assert m.layers == () and m.media_type == mf.MEDIA_TYPE_MANIFEST


# --- ModelConfig -------------------------------------------------------------------------------


def test_model_config_round_trip() -> None:
    config = ModelConfig(
        model_family="llama",
        model_families=("llama", "clip"),
        model_type="134.52M",
        file_type="Q4_1",
        diff_ids=(D_MODEL, D_TEMPLATE_1),
    )
    data = config.to_json()
    assert ModelConfig.from_json(data) == config
    assert ModelConfig.from_json(data).to_json() == data
    obj = json.loads(data)
    assert list(obj) == [
        "model_format",
        "model_family",
        "model_families",
        "model_type",
        "file_type",
        "architecture",
        "os",
        "rootfs",
    ]
    assert obj["rootfs"] == {"type": "layers", "diff_ids": [D_MODEL, D_TEMPLATE_1]}
    assert obj["model_format"] == "gguf" and obj["os"] == "linux"


def test_model_config_tolerates_missing_null_and_unknown_keys() -> None:
    assert ModelConfig.from_json(b"{}") == ModelConfig()
    go_style = b'{"model_family":"qwen2","model_families":null,"rootfs":null,"renderer":"x"}'
    assert ModelConfig.from_json(go_style) == ModelConfig(model_family="qwen2")
    no_diff_ids = b'{"rootfs":{"type":"layers"}}'
    assert ModelConfig.from_json(no_diff_ids).diff_ids == ()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"model_type": 5}',
        b'{"model_families": "llama"}',
        b'{"rootfs": "layers"}',
        b'{"rootfs": {"diff_ids": [1]}}',
    ],
)
def test_model_config_rejects_garbage(data: bytes) -> None:
    with pytest.raises(InvalidRequest, match="corrupt model config"):
        ModelConfig.from_json(data)


# --- write_atomic ------------------------------------------------------------------------------


def test_write_atomic_creates_parents_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "latest"
    write_atomic(path, sample().to_json())
    assert Manifest.from_json(path.read_bytes()) == sample()
    write_atomic(path, b"second version")
    assert path.read_bytes() == b"second version"
    assert os.listdir(path.parent) == ["latest"]


def test_write_atomic_failure_leaves_target_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "dir"
    target.mkdir()  # os.replace of a file onto a directory fails
    (target / "keep").write_bytes(b"x")
    with pytest.raises(OSError):
        write_atomic(target, b"data")
    assert sorted(os.listdir(tmp_path)) == ["dir"]
    assert os.listdir(target) == ["keep"]
