"""What a create asks for, and the two ways of building it from a Modelfile.

On the client (`olla create -f`), `request_from_modelfile` resolves FROM and ADAPTER paths on the
client's machine and uploads the files as blobs, as Ollama's CLI does. On the daemon,
`request_from_text` reads Ollama's older form (the Modelfile's text in the body) with no file
system at all: FROM and ADAPTER may name a model or a blob digest, and a path is refused, never
opened, since a client must not read the files of the daemon's machine through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from olla.chat import Message, ParamValue
from olla.errors import InvalidDigest, InvalidRequest
from olla.registry.blobs import parse_digest
from olla.registry.gguf_info import read_gguf_info
from olla.registry.model_dir import CONFIG, check_files, read_dir_info, wanted_file
from olla.registry.modelfile import Modelfile
from olla.registry.modelfile import parse as parse_modelfile
from olla.registry.names import ModelName
from olla.registry.sources import PACKAGE_PREFIX, Source, SourceKind, resolve_source

# config.json is a few KB (a multimodal one tens of KB); reading one is bounded all the same
MAX_CONFIG_BYTES = 1 << 20
_PATH_STARTS = ("/", "./", "../", "~", ".\\", "..\\")
_MODEL_SUFFIXES = (".gguf", ".bin", ".safetensors")


@dataclass
class CreateRequest:
    """POST /api/create: build a model from a base model or uploaded files plus overrides.

    `modelfile` and `path` are Ollama's older form; `request_from_text` turns `modelfile` into
    the other fields on the daemon. `olla.api.parse_create` reads one from a JSON body.
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


def _base_request(name: ModelName, modelfile: Modelfile) -> CreateRequest:
    """The request's text fields from a Modelfile (FROM and ADAPTER are the caller's)."""
    return CreateRequest(
        model=name,
        template=modelfile.template,
        system=modelfile.system,
        parameters=dict(modelfile.parameters),
        messages=list(modelfile.messages) if modelfile.messages else None,
        licenses=list(modelfile.licenses) if modelfile.licenses else None,
    )


def request_from_modelfile(
    name: ModelName, modelfile: Modelfile, base_dir: Path, upload: Callable[[Path], str]
) -> CreateRequest:
    """The client's half: a create request from a parsed Modelfile, paths resolved against
    `base_dir` on this machine; `upload(path)` stores a file as a blob and returns its digest.
    Every file is checked before the first upload."""
    req = _base_request(name, modelfile)
    sources = [resolve_source(value, base_dir) for value in (modelfile.from_, *modelfile.more_from)]
    _one_model_name([s.value for s in sources if s.kind is SourceKind.MODEL])
    adapters = [_local_adapter(value, base_dir) for value in modelfile.adapters]
    local: dict[str, Path] = {}
    for source in sources:
        if source.kind is SourceKind.FILE:
            assert source.path is not None
            read_gguf_info(source.path)  # reject a non-GGUF before uploading anything
            file = source.path.name  # two files of one name: a number keeps them apart
            local[file if file not in local else f"{len(local)}-{file}"] = source.path
        elif source.kind is SourceKind.DIRECTORY:
            assert source.path is not None
            local.update(directory_files(source.path))
        elif source.kind is SourceKind.DIGEST and len(sources) > 1:
            req.files[source.value] = source.value  # the daemon tells model from projector
        else:
            req.from_ = source.value
    req.files.update({name: upload(path) for name, path in local.items()})
    for adapter in adapters:
        digest = upload(adapter.path) if adapter.path else adapter.value
        req.adapters[adapter.path.name if adapter.path else digest] = digest
    return req


def _local_adapter(value: str, base_dir: Path) -> Source:
    adapter = resolve_source(value, base_dir)
    if adapter.kind in (SourceKind.MODEL, SourceKind.DIRECTORY):
        raise InvalidRequest(f"ADAPTER {value}: expected a file path or a blob digest")
    if adapter.path is not None:
        read_gguf_info(adapter.path)  # only GGUF LoRA adapters load: refuse before uploading
    return adapter


def directory_files(directory: Path) -> dict[str, Path]:
    """A model directory's files by their paths inside it, checked before anything is uploaded:
    InvalidRequest if it lacks a part or its config.json cannot be read."""
    files = {
        path.relative_to(directory).as_posix(): path
        for path in sorted(directory.rglob("*"))
        if path.is_file() and wanted_file(path.relative_to(directory).as_posix())
    }
    check_files(files, str(directory))
    config = directory / CONFIG
    read_dir_info(read_bounded(config, MAX_CONFIG_BYTES, str(config)), str(config))
    return files


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """A small file's bytes; InvalidRequest (naming its size, never its bytes) past `limit`."""
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InvalidRequest(f"{what} is over {limit} bytes: is it the right file?")
    return data


def request_from_text(req: CreateRequest) -> CreateRequest:
    """The daemon's half: `req` with its `modelfile` text read into the other fields.

    FROM must be a model name or a blob digest, ADAPTER a blob digest (`@sha256:<hex>`, as
    Ollama's older CLI wrote them, is one too); fields also set in the body win over the
    Modelfile's. Nothing on the daemon's file system is looked at.
    """
    if req.modelfile is None:
        if req.path is not None:
            raise InvalidRequest(
                '"path" names a Modelfile on the daemon\'s machine, which olla does not read for '
                'a client: send the Modelfile\'s text in "modelfile" (FROM a model name or an '
                "uploaded blob's digest), or run `olla create NAME -f Modelfile`"
            )
        return req
    modelfile = parse_modelfile(req.modelfile)
    built = _base_request(req.model, modelfile)
    base, files = _daemon_froms(modelfile)
    digests = [_daemon_adapter(value) for value in modelfile.adapters]
    return replace(
        built,
        from_=req.from_ or (None if req.files else base),
        files=req.files or files,
        adapters=req.adapters or {digest: digest for digest in digests},
        template=req.template if req.template is not None else built.template,
        system=req.system if req.system is not None else built.system,
        parameters={**built.parameters, **req.parameters},
        messages=req.messages if req.messages is not None else built.messages,
        licenses=req.licenses if req.licenses is not None else built.licenses,
        quantize=req.quantize,
        stream=req.stream,
    )


def _daemon_froms(modelfile: Modelfile) -> tuple[str | None, dict[str, str]]:
    """FROM lines as the daemon takes them: a model name or digest; with more than one FROM (a
    model and its projector), the digests as `files`, which create tells apart by content."""
    refs = [daemon_reference("FROM", v) for v in (modelfile.from_, *modelfile.more_from)]
    if len(refs) == 1:
        return refs[0], {}
    names = [ref for ref in refs if not ref.startswith("sha256:")]
    _one_model_name(names)
    return (names[0] if names else None), {r: r for r in refs if r.startswith("sha256:")}


def _one_model_name(names: list[str]) -> None:
    """InvalidRequest when two FROM lines name models: a second FROM is a projector's file."""
    if len(names) > 1:
        raise InvalidRequest(
            f"FROM {names[0]} and FROM {names[1]} both name models; a Modelfile builds on one "
            "model, and a second FROM names its vision projector's GGUF file"
        )


def _daemon_adapter(value: str) -> str:
    digest = daemon_reference("ADAPTER", value)
    if not digest.startswith("sha256:"):
        raise InvalidRequest(
            f'ADAPTER "{value}": expected the blob digest of an uploaded GGUF LoRA file '
            "(sha256:<64 hex>), not a model name"
        )
    return digest


def daemon_reference(instruction: str, value: str) -> str:
    """A FROM/ADAPTER value as the daemon takes it: a canonical `sha256:<hex>` digest or a
    model name; a path (or `pkg:` file) is an InvalidRequest saying how to send the file."""
    text = value.strip()
    try:
        return parse_digest(text.removeprefix("@"))
    except InvalidDigest:
        pass
    if text.startswith(PACKAGE_PREFIX):
        raise InvalidRequest(
            f'{instruction} "{text}" names a file of a Python package, and the daemon does not '
            "look in its own packages for a client: run `olla create NAME -f Modelfile`, which "
            f"finds {PACKAGE_PREFIX} files where it runs and uploads them"
        )
    if _looks_like_path(text):
        raise InvalidRequest(
            f'{instruction} "{text}" is a path, and olla does not read the daemon\'s files for '
            "a client: upload the file with POST /api/blobs/<digest> and name it by that digest "
            f"({instruction} sha256:<64 hex>), or run `olla create NAME -f Modelfile`, which "
            "uploads the files a Modelfile names"
        )
    ModelName.parse(text)  # InvalidName says what is wrong with it
    return text


def _looks_like_path(text: str) -> bool:
    # "model.gguf" is a valid model name but surely meant as a file; a name whose tag is a file
    # ("hf.co/owner/repo:model.gguf") has a colon, which a path given to FROM rarely has.
    return (
        text.startswith(_PATH_STARTS)
        or "\\" in text
        or (text.lower().endswith(_MODEL_SUFFIXES) and ":" not in text)
    )
