"""What a create asks for, and how the client builds it from a Modelfile.

`request_from_modelfile` resolves FROM and ADAPTER paths and uploads the files as blobs, as
Ollama's CLI does, so that the create itself names only digests and models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olla.chat import Message, ParamValue
from olla.errors import InvalidRequest
from olla.registry.gguf_info import read_gguf_info
from olla.registry.model_dir import CONFIG, check_files, read_dir_info, wanted_file
from olla.registry.modelfile import Modelfile
from olla.registry.names import ModelName
from olla.registry.sources import SourceKind, resolve_source


@dataclass
class CreateRequest:
    """POST /api/create: build a model from a base model or uploaded files plus overrides.

    `modelfile` and `path` are Ollama's older form. `olla.api.parse_create` reads one from a
    JSON body.
    """

    model: ModelName
    from_: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    adapters: dict[str, str] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    parameters: dict[str, ParamValue] = field(default_factory=dict)
    messages: list[Message] | None = None
    licenses: list[str] | None = None
    quantize: str | None = None
    stream: bool = True
    modelfile: str | None = None
    path: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The body as the client sends it (only fields that are set)."""
        body: dict[str, Any] = {"model": str(self.model), "stream": self.stream}
        optional = {
            "from": self.from_,
            "files": self.files or None,
            "adapters": self.adapters or None,
            "template": self.template,
            "system": self.system,
            "parameters": self.parameters or None,
            "messages": None
            if self.messages is None
            else [{"role": m.role, "content": m.content} for m in self.messages],
            "license": self.licenses,
            "quantize": self.quantize,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return body


def request_from_modelfile(
    name: ModelName, modelfile: Modelfile, base_dir: Path, upload: Callable[[Path], str]
) -> CreateRequest:
    """A create request from a parsed Modelfile; `upload(path)` stores a file, returns digest."""
    req = CreateRequest(
        model=name,
        template=modelfile.template,
        system=modelfile.system,
        parameters=dict(modelfile.parameters),
        messages=list(modelfile.messages) if modelfile.messages else None,
        licenses=list(modelfile.licenses) if modelfile.licenses else None,
    )
    source = resolve_source(modelfile.from_, base_dir)
    if source.kind is SourceKind.FILE:
        assert source.path is not None
        read_gguf_info(source.path)  # reject a non-GGUF before uploading anything
        req.files = {source.path.name: upload(source.path)}
    elif source.kind is SourceKind.DIRECTORY:
        assert source.path is not None
        req.files = {name: upload(path) for name, path in directory_files(source.path).items()}
    else:
        req.from_ = source.value
    for value in modelfile.adapters:
        adapter = resolve_source(value, base_dir)
        if adapter.kind in (SourceKind.MODEL, SourceKind.DIRECTORY):
            raise InvalidRequest(f"ADAPTER {value}: expected a file path or a blob digest")
        digest = upload(adapter.path) if adapter.path else adapter.value
        req.adapters[adapter.path.name if adapter.path else digest] = digest
    return req


def directory_files(directory: Path) -> dict[str, Path]:
    """A model directory's files by their paths inside it, checked before anything is uploaded:
    InvalidRequest if it lacks a part or its config.json cannot be read."""
    files = {
        path.relative_to(directory).as_posix(): path
        for path in sorted(directory.rglob("*"))
        if path.is_file() and wanted_file(path.relative_to(directory).as_posix())
    }
    check_files(files, str(directory))
    read_dir_info((directory / CONFIG).read_bytes(), str(directory / CONFIG))
    return files
