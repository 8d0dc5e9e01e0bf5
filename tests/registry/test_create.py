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
from tests.model_dirs import model_files
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


def test_a_template_that_cannot_parse_is_refused(registry: Registry, tmp_path: Path) -> None:
    digest = stored_gguf(registry, tmp_path)
    req = CreateRequest(model=NAME, files={"m.gguf": digest}, template="{{ if }}")
    message = refused(registry, req)
    assert message.startswith("TEMPLATE does not parse: line 1, column 1: missing value for if")


def test_a_template_is_checked_on_a_model_name_too(registry: Registry, tmp_path: Path) -> None:
    digest = stored_gguf(registry, tmp_path)
    create_model(registry, CreateRequest(model=NAME, files={"m.gguf": digest}), lambda _: None)
    req = CreateRequest(model=ModelName.parse("derived"), from_="made", template="{{ end }}")
    before = registry.blobs.digests()
    with pytest.raises(InvalidRequest, match="TEMPLATE does not parse"):
        create_model(registry, req, lambda _: None)
    assert registry.blobs.digests() == before and not registry.exists(req.model)


def test_a_gguf_whose_jinja_template_cannot_parse(registry: Registry, tmp_path: Path) -> None:
    digest = stored_gguf(registry, tmp_path, template="{% for m in messages %}{{ m }}")
    message = refused(registry, CreateRequest(model=NAME, files={"m.gguf": digest}))
    assert message.startswith(
        "the model's chat template (the GGUF's tokenizer.chat_template) does not parse: line 1"
    )
    # a TEMPLATE takes the Jinja one's place, so the model is usable: no refusal then
    req = CreateRequest(model=NAME, files={"m.gguf": digest}, template="{{ .Prompt }}")
    create_model(registry, req, lambda _: None)
    assert registry.exists(NAME)


def test_a_directory_whose_jinja_template_cannot_parse(registry: Registry) -> None:
    files = model_files()
    files["chat_template.jinja"] = b"{% if %}"
    digests = {name: registry.blobs.put_bytes(data) for name, data in files.items()}
    message = refused(registry, CreateRequest(model=NAME, files=digests))
    assert message.startswith("the model's chat template (chat_template.jinja) does not parse")


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
