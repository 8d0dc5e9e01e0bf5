"""create_model on a real store: every check before the first report and the first write."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from olla.errors import InvalidRequest
from olla.registry.create import create_model
from olla.registry.create_request import CreateRequest
from olla.registry.names import ModelName
from olla.registry.store import Registry
from tests.registry.test_gguf_info import write_gguf

NAME = ModelName.parse("made")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models")


def stored_gguf(registry: Registry, tmp_path: Path, template: str | None = None) -> str:
    """A tiny GGUF put in the store (its chat template replaced by `template` if given)."""

    def set_template(w: gguf.GGUFWriter) -> None:
        if template is not None:
            w.add_chat_template(template)

    path = write_gguf(tmp_path / "m.gguf", extra=set_template if template else None)
    return registry.blobs.put_file(path)


def refused(registry: Registry, req: CreateRequest) -> str:
    """The create's error message; asserts that nothing was reported, stored or named."""
    before = registry.blobs.digests()
    reports: list[str] = []
    with pytest.raises(InvalidRequest) as caught:
        create_model(registry, req, reports.append)
    assert caught.value.status == 400
    assert reports == [] and registry.blobs.digests() == before
    assert registry.list_models() == []
    return str(caught.value)


def test_a_bad_adapter_is_refused_before_any_report(registry: Registry, tmp_path: Path) -> None:
    digest = stored_gguf(registry, tmp_path)
    adapter = registry.blobs.put_bytes(b"s3cr:x:0:0\n")
    req = CreateRequest(model=NAME, files={"m.gguf": digest}, adapters={"a": adapter})
    message = refused(registry, req)
    assert message == (
        f'adapter {adapter} is not a GGUF model file (it does not start with "GGUF"); '
        "only GGUF LoRA adapters are supported"
    )


def test_a_path_as_from_is_refused(registry: Registry) -> None:
    message = refused(registry, CreateRequest(model=NAME, from_="/etc/shadow"))
    assert message.startswith('FROM "/etc/shadow" is a path')


def test_a_good_request_reports_then_stores(registry: Registry, tmp_path: Path) -> None:
    digest = stored_gguf(registry, tmp_path)
    reports: list[str] = []
    req = CreateRequest(model=NAME, files={"m.gguf": digest}, template="{{ .Prompt }}")
    manifest = create_model(registry, req, reports.append)
    assert reports[0] == f"using existing layer {digest}"
    assert reports[1].startswith("creating new layer sha256:") and reports[-1] == "writing manifest"
    assert registry.entry(NAME).manifest == manifest
