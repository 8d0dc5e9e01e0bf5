"""A model and its vision projector in the store: created from two FROMs or from files, shown
with `projector_info` and `vision`, written back as two FROM lines, pruned with the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from olla.errors import InvalidRequest
from olla.registry import manifests as mf
from olla.registry.create import create_model
from olla.registry.create_request import CreateRequest, request_from_modelfile, request_from_text
from olla.registry.describe import show, tags_entry
from olla.registry.modelfile import parse as parse_modelfile
from olla.registry.names import ModelName
from olla.registry.store import Registry
from tests.registry.test_create import refused
from tests.registry.test_gguf_info import write_gguf
from tests.tiny_projector import PROJECTION, write_projector

NAME = ModelName.parse("seer")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models")


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "model.gguf": write_gguf(tmp_path / "model.gguf"),
        "mmproj.gguf": write_projector(tmp_path / "mmproj.gguf"),
    }


def quiet(_: str) -> None:
    pass


def kinds(manifest: mf.Manifest) -> list[str]:
    return [layer.media_type for layer in manifest.layers]


@pytest.mark.parametrize("order", ["model first", "projector first"])
def test_a_modelfile_with_two_froms_makes_both_layers(
    registry: Registry, files: dict[str, Path], tmp_path: Path, order: str
) -> None:
    lines = ["FROM ./model.gguf", "FROM ./mmproj.gguf"]
    text = "\n".join(lines if order == "model first" else lines[::-1]) + "\nSYSTEM look\n"
    req = request_from_modelfile(
        NAME, parse_modelfile(text), tmp_path, lambda p: registry.blobs.put_file(p)
    )
    manifest = create_model(registry, req, quiet)
    assert kinds(manifest) == [mf.MEDIA_TYPE_MODEL, mf.MEDIA_TYPE_PROJECTOR, mf.MEDIA_TYPE_SYSTEM]
    model = registry.resolve(NAME)
    assert model.model_path is not None and model.projector_path is not None
    assert model.model_path.read_bytes() == files["model.gguf"].read_bytes()
    assert model.projector_path.read_bytes() == files["mmproj.gguf"].read_bytes()


def test_create_with_files_tells_the_projector_by_its_metadata(
    registry: Registry, files: dict[str, Path]
) -> None:
    # names say nothing (`olla show --modelfile` names blobs sha256-...): the content does
    digests = {f"sha256-{i}": registry.blobs.put_file(p) for i, p in enumerate(files.values())}
    manifest = create_model(registry, CreateRequest(model=NAME, files=digests), quiet)
    assert kinds(manifest) == [mf.MEDIA_TYPE_MODEL, mf.MEDIA_TYPE_PROJECTOR]
    assert manifest.layers[1].digest == digests["sha256-1"]


def test_a_projector_on_a_stored_model_by_name(registry: Registry, files: dict[str, Path]) -> None:
    model = registry.blobs.put_file(files["model.gguf"])
    create_model(registry, CreateRequest(model=ModelName.parse("base"), files={"m": model}), quiet)
    projector = registry.blobs.put_file(files["mmproj.gguf"])
    req = CreateRequest(model=NAME, from_="base", files={"mmproj.gguf": projector})
    manifest = create_model(registry, req, quiet)
    assert kinds(manifest) == [mf.MEDIA_TYPE_MODEL, mf.MEDIA_TYPE_PROJECTOR]
    # built on again, it keeps the projector, as every other layer of its base
    derived = create_model(registry, CreateRequest(model=ModelName.parse("d"), from_="seer"), quiet)
    assert kinds(derived) == kinds(manifest)


def test_a_second_projector_is_a_400_that_says_so(
    registry: Registry, files: dict[str, Path], tmp_path: Path
) -> None:
    other = write_projector(tmp_path / "other.gguf", name="Another SigLIP")
    digests = {name: registry.blobs.put_file(p) for name, p in files.items()}
    digests["other.gguf"] = registry.blobs.put_file(other)
    message = refused(registry, CreateRequest(model=NAME, files=digests))
    assert message.startswith("more than one vision projector (mmproj.gguf, other.gguf)")


def test_a_projector_alone_is_a_400_asking_for_the_model(
    registry: Registry, files: dict[str, Path]
) -> None:
    digest = registry.blobs.put_file(files["mmproj.gguf"])
    message = refused(registry, CreateRequest(model=NAME, files={"mmproj.gguf": digest}))
    assert message.startswith("mmproj.gguf is a vision projector, not a model: give the model")
    message = refused(registry, CreateRequest(model=NAME, from_=digest))
    assert f"blob {digest} is a vision projector, not a model" in message


def test_the_daemon_reads_two_from_digests_of_a_modelfile_text() -> None:
    a, b = f"sha256:{1:064x}", f"sha256:{2:064x}"
    req = request_from_text(CreateRequest(model=NAME, modelfile=f"FROM {a}\nFROM {b}\n"))
    assert (req.from_, req.files) == (None, {a: a, b: b})
    req = request_from_text(CreateRequest(model=NAME, modelfile=f"FROM smol\nFROM {b}\n"))
    assert (req.from_, req.files) == ("smol", {b: b})
    with pytest.raises(InvalidRequest, match="FROM smol and FROM other both name models"):
        request_from_text(CreateRequest(model=NAME, modelfile="FROM smol\nFROM other\n"))


def test_show_has_projector_info_vision_and_both_froms(
    registry: Registry, files: dict[str, Path]
) -> None:
    digests = {name: registry.blobs.put_file(p) for name, p in files.items()}
    create_model(registry, CreateRequest(model=NAME, files=digests), quiet)
    model = registry.resolve(NAME)
    body = show(registry, model, verbose=False)
    info = body["projector_info"]
    assert info["general.architecture"] == "clip" and info["general.type"] == "mmproj"
    assert info["clip.vision.projection_dim"] == PROJECTION
    assert body["capabilities"] == ["completion", "vision"]
    assert tags_entry(registry, model.entry)["capabilities"] == ["completion", "vision"]
    froms = [line for line in body["modelfile"].splitlines() if line.startswith("FROM ")]
    assert froms == [f"FROM {model.model_path}", f"FROM {model.projector_path}"]
    plain = ModelName.parse("plain")
    create_model(registry, CreateRequest(model=plain, files={"m": digests["model.gguf"]}), quiet)
    body = show(registry, registry.resolve(plain), verbose=False)
    assert "projector_info" not in body and body["capabilities"] == ["completion"]


def test_rm_leaves_no_projector_blob_behind(registry: Registry, files: dict[str, Path]) -> None:
    digests = {name: registry.blobs.put_file(p) for name, p in files.items()}
    create_model(registry, CreateRequest(model=NAME, files=digests), quiet)
    removed = registry.delete(NAME)
    assert digests["mmproj.gguf"] in removed and registry.blobs.digests() == []
