"""Create: a base (model name, uploaded GGUF or blob digest) plus overrides → layers → manifest.

The client parses the Modelfile and uploads local files as blobs first (as Ollama's CLI does), so
the daemon only ever sees digests and model names (`olla.registry.create_request`). Everything is
checked before anything is stored or reported, so a bad request is a 400 with nothing left behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from olla.chat import ParamValue
from olla.errors import InvalidModelFile, InvalidRequest, NotSupported
from olla.quantize import SOURCES, quantize_file, type_name
from olla.registry import manifests as mf
from olla.registry.adapter_check import check_adapter
from olla.registry.blobs import TEMP_PREFIX
from olla.registry.create_request import (
    MAX_CONFIG_BYTES,
    CreateRequest,
    daemon_reference,
    read_bounded,
)
from olla.registry.gguf_info import GGUFInfo, check_gguf_header, read_gguf_info
from olla.registry.model_dir import (
    CONFIG,
    DirInfo,
    chat_format_of,
    check_files,
    read_dir_info,
    wanted_file,
)
from olla.registry.names import ModelName
from olla.registry.projector import is_projector
from olla.registry.store import Registry
from olla.registry.template_check import check_chat_template, check_template

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
# Layer order in a manifest, as Ollama writes it.
_LAYER_ORDER = (
    mf.MEDIA_TYPE_MODEL,
    mf.MEDIA_TYPE_FILE,
    mf.MEDIA_TYPE_PROJECTOR,
    mf.MEDIA_TYPE_ADAPTER,
    mf.MEDIA_TYPE_TEMPLATE,
    mf.MEDIA_TYPE_SYSTEM,
    mf.MEDIA_TYPE_PARAMS,
    mf.MEDIA_TYPE_MESSAGES,
    mf.MEDIA_TYPE_LICENSE,
)
# tokenizer_config.json holds the added tokens (a large vocabulary's run to a few MB) and
# chat_template.jinja a template; both are read whole to check the template
_MAX_TOKENIZER_CONFIG_BYTES = 16 << 20


@dataclass
class _Draft:
    """Layers being assembled, keyed by media type; the GGUF info for the config blob; the
    new weights' own chat template and where it came from (None when building on a model)."""

    layers: dict[str, list[mf.Layer]] = field(default_factory=dict)
    info: GGUFInfo | DirInfo | None = None
    parameters: dict[str, ParamValue] = field(default_factory=dict)
    chat_template: tuple[str, str] | None = None

    def set(self, media_type: str, layers: list[mf.Layer]) -> None:
        self.layers[media_type] = layers


def create_model(registry: Registry, req: CreateRequest, progress: Progress) -> mf.Manifest:
    """Build and store the model `req.model`; reports each step through `progress`.

    Every check comes before the first report and the first write, so that a bad request gets
    a 4xx status (not an error line in a 200 stream) and leaves nothing in the store.
    """
    quantize = type_name(req.quantize) if req.quantize else None
    draft = _Draft()
    files, projector = _projector_of(registry, req.files)
    if files:
        _base_from_files(registry, draft, files)
    elif req.from_:
        _base_from(registry, draft, req.from_)
    elif projector:
        raise InvalidRequest(
            f"{projector[0]} is a vision projector, not a model: give the model too (a second "
            'FROM line, or its file in "files")'
        )
    else:
        raise InvalidRequest('neither "from" nor "files" given: say which model to build on')
    if projector:
        _set_projector(registry, draft, projector[1])
    if quantize:
        _check_quantize(draft)
    adapters = [_adapter_layer(registry, draft, n, d) for n, d in req.adapters.items()]
    if req.template is not None:
        check_template(req.template)
    elif draft.chat_template is not None:
        check_chat_template(*draft.chat_template)
    # From here on: writes and reports.
    for layers in draft.layers.values():
        for layer in layers:
            progress(f"using existing layer {layer.digest}")
    if quantize:
        _quantize(registry, draft, quantize, progress)
    if req.adapters:  # after the base's own adapters, as Ollama appends them
        inherited = draft.layers.get(mf.MEDIA_TYPE_ADAPTER, [])
        known = {layer.digest for layer in inherited}
        draft.set(
            mf.MEDIA_TYPE_ADAPTER, [*inherited, *(a for a in adapters if a.digest not in known)]
        )
    _text_layers(registry, draft, req, progress)
    ordered = tuple(layer for kind in _LAYER_ORDER for layer in draft.layers.get(kind, []))
    config = config_layer(registry, draft.info, ordered)
    manifest = mf.Manifest(config=config, layers=ordered)
    progress("writing manifest")
    registry.write_manifest(req.model, manifest)
    log.info("created model", extra={"model": str(req.model), "digest": manifest.digest})
    return manifest


def _text_layers(registry: Registry, draft: _Draft, req: CreateRequest, progress: Progress) -> None:
    """The template, system, parameters, messages and licenses layers the request sets."""
    for media_type, text in (
        (mf.MEDIA_TYPE_TEMPLATE, req.template),
        (mf.MEDIA_TYPE_SYSTEM, req.system),
    ):
        if text is not None:
            draft.set(media_type, [_text_layer(registry, media_type, text, progress)])
    if req.parameters:
        merged = {**draft.parameters, **req.parameters}
        payload = json.dumps(merged, sort_keys=True)
        draft.set(
            mf.MEDIA_TYPE_PARAMS, [_text_layer(registry, mf.MEDIA_TYPE_PARAMS, payload, progress)]
        )
    if req.messages is not None:
        payload = json.dumps([{"role": m.role, "content": m.content} for m in req.messages])
        layers = [_text_layer(registry, mf.MEDIA_TYPE_MESSAGES, payload, progress)]
        draft.set(mf.MEDIA_TYPE_MESSAGES, layers if req.messages else [])
    if req.licenses is not None:
        draft.set(
            mf.MEDIA_TYPE_LICENSE,
            [_text_layer(registry, mf.MEDIA_TYPE_LICENSE, t, progress) for t in req.licenses],
        )


def _check_quantize(draft: _Draft) -> None:
    """InvalidRequest unless the draft's model is a GGUF file that can be quantized."""
    [layer] = draft.layers.get(mf.MEDIA_TYPE_MODEL, [None])
    if isinstance(draft.info, DirInfo):
        raise InvalidRequest(
            f'"quantize" works on GGUF models; this one is {draft.info.model_format} (quantize '
            "it with exllamav2's converter instead)"
        )
    if layer is None or draft.info is None:
        raise InvalidRequest('"quantize" needs a model file to quantize')
    if draft.info.file_type not in SOURCES:
        raise InvalidRequest(
            f"quantize works on unquantized models ({', '.join(SOURCES)}); this one is "
            f"{draft.info.file_type} already"
        )


def _quantize(registry: Registry, draft: _Draft, name: str, progress: Progress) -> None:
    """Replace the draft's model layer with its weights quantized to `name` (checked before)."""
    [layer] = draft.layers[mf.MEDIA_TYPE_MODEL]
    assert isinstance(draft.info, GGUFInfo)
    progress(f"quantizing {draft.info.file_type} model to {name}")
    target = registry.blobs.root / f"{TEMP_PREFIX}quantize-{secrets.token_hex(8)}.gguf"
    try:
        quantize_file(registry.blobs.path(layer.digest), target, name)
        digest = registry.blobs.adopt(target)
    finally:
        target.unlink(missing_ok=True)
    registry.pin(digest)
    draft.info = read_gguf_info(registry.blobs.path(digest))
    progress(f"using layer {digest}")
    size = registry.blobs.size(digest)
    draft.set(mf.MEDIA_TYPE_MODEL, [mf.Layer(mf.MEDIA_TYPE_MODEL, digest, size)])


def _projector_of(
    registry: Registry, files: dict[str, str]
) -> tuple[dict[str, str], tuple[str, str] | None]:
    """`files` less the vision projector among them, and that one (name, digest), told apart by
    its metadata as Ollama tells it; InvalidRequest for a second one."""
    projectors = []
    for name, digest in files.items():
        if registry.blobs.exists(digest) and _is_projector_blob(registry, digest):
            projectors.append((name, digest))
    if len(projectors) > 1:
        names = ", ".join(name for name, _ in projectors)
        raise InvalidRequest(
            f"more than one vision projector ({names}): a model takes one projector; give "
            "one FROM line for the model and one for its projector"
        )
    rest = {name: digest for name, digest in files.items() if (name, digest) not in projectors}
    return rest, (projectors[0] if projectors else None)


def _is_projector_blob(registry: Registry, digest: str) -> bool:
    path = registry.blobs.path(digest)
    if not _is_gguf(path):
        return False
    with _named_by_digest(registry, digest, f"blob {digest}"):
        return is_projector(read_gguf_info(path))


def _set_projector(registry: Registry, draft: _Draft, digest: str) -> None:
    """The draft's projector layer (in place of the base model's own, if it had one)."""
    if isinstance(draft.info, DirInfo):
        raise NotSupported(
            f"a vision projector goes with a GGUF model (llama.cpp), and this one is "
            f"{draft.info.model_format}: build on the model's GGUF"
        )
    size = registry.blobs.size(digest)
    draft.set(mf.MEDIA_TYPE_PROJECTOR, [mf.Layer(mf.MEDIA_TYPE_PROJECTOR, digest, size)])


def _base_from_files(registry: Registry, draft: _Draft, files: dict[str, str]) -> None:
    # Judge by content, not by name: `olla show --modelfile` names blobs sha256-<hex>.
    for name, digest in files.items():
        if not registry.blobs.exists(digest):
            raise InvalidRequest(f"{name}: blob {digest} is not in the store; upload it first")
    ggufs = [digest for digest in files.values() if _is_gguf(registry.blobs.path(digest))]
    if len(ggufs) > 1:
        raise InvalidRequest(f"expected one GGUF model file, got {len(ggufs)}")
    if not ggufs:
        if any(name.endswith(".safetensors") for name in files):
            _directory_model(registry, draft, files)
            return
        if any(name.endswith((".bin", ".pt")) for name in files):
            raise NotSupported(
                f"olla imports GGUF files, and EXL2 or safetensors model directories (got: "
                f"{', '.join(sorted(files))}); save the weights as safetensors, or convert "
                "them to GGUF with llama.cpp's convert_hf_to_gguf.py"
            )
        name, digest = next(iter(files.items()))
        with _named_by_digest(registry, digest, name):
            check_gguf_header(registry.blobs.path(digest))  # raises, naming why
    _model_blob(registry, draft, ggufs[0])


def _directory_model(registry: Registry, draft: _Draft, files: dict[str, str]) -> None:
    """A model directory (EXL2 or safetensors): a layer per file, named by its path."""
    bad = [name for name in files if not wanted_file(name)]
    if bad:
        raise InvalidRequest(
            f"not files of a model directory: {', '.join(sorted(bad))} (send config.json, the "
            "tokenizer files and *.safetensors, by their paths inside the directory)"
        )
    check_files(files, "this set of files")
    config = read_bounded(registry.blobs.path(files[CONFIG]), MAX_CONFIG_BYTES, CONFIG)
    draft.info = read_dir_info(config)
    texts = {
        name: read_bounded(
            registry.blobs.path(files[name]), _MAX_TOKENIZER_CONFIG_BYTES, name
        ).decode("utf-8", errors="replace")
        for name in ("tokenizer_config.json", "chat_template.jinja")
        if name in files
    }
    template = chat_format_of(texts.get("tokenizer_config.json"), texts.get("chat_template.jinja"))
    if template[0] is not None:
        where = "chat_template.jinja" if "chat_template.jinja" in texts else "tokenizer_config.json"
        draft.chat_template = (template[0], where)
    layers = [
        mf.Layer(mf.MEDIA_TYPE_FILE, digest, registry.blobs.size(digest), name=name)
        for name, digest in sorted(files.items())
    ]
    draft.set(mf.MEDIA_TYPE_FILE, layers)


def _is_gguf(path: Path) -> bool:
    try:
        check_gguf_header(path)
    except InvalidModelFile:
        return False
    return True


def _base_from(registry: Registry, draft: _Draft, value: str) -> None:
    reference = daemon_reference("FROM", value)  # a digest or a model name; never a path
    if reference.startswith("sha256:"):
        _model_blob(registry, draft, reference)
        return
    base = registry.resolve(ModelName.parse(reference))
    if base.model_path is not None and base.model_path.is_dir():
        draft.info = read_dir_info((base.model_path / CONFIG).read_bytes())
    elif base.model_path is not None:
        draft.info = read_gguf_info(base.model_path)
    draft.parameters = dict(base.parameters)
    for layer in base.entry.manifest.layers:
        draft.layers.setdefault(layer.media_type, []).append(layer)


def _model_blob(registry: Registry, draft: _Draft, digest: str) -> None:
    path = registry.blobs.path(digest)
    if not path.is_file():
        raise InvalidRequest(
            f"blob {digest} is not in the store; upload it with POST /api/blobs/{digest}"
        )
    with _named_by_digest(registry, digest, f"blob {digest}"):
        info = read_gguf_info(path)
    if is_projector(info):
        raise InvalidRequest(
            f"blob {digest} is a vision projector, not a model: FROM the model, then FROM the "
            "projector"
        )
    draft.info = info
    if info.chat_template is not None:
        draft.chat_template = (info.chat_template, "the GGUF's tokenizer.chat_template")
    draft.set(mf.MEDIA_TYPE_MODEL, [mf.Layer(mf.MEDIA_TYPE_MODEL, digest, path.stat().st_size)])


def _adapter_layer(registry: Registry, draft: _Draft, name: str, digest: str) -> mf.Layer:
    """The layer of the adapter `name` (blob `digest`), once it is known to fit the base."""
    path = registry.blobs.path(digest)
    if not path.is_file():
        raise InvalidRequest(f"adapter blob {digest} is not in the store; upload it first")
    try:
        with _named_by_digest(registry, digest, f"adapter {digest}"):
            info = read_gguf_info(path)
    except InvalidModelFile as exc:
        raise InvalidRequest(f"{exc}; only GGUF LoRA adapters are supported") from None
    if isinstance(draft.info, DirInfo):
        raise NotSupported(
            f"LoRA adapters apply to GGUF models only (llama.cpp), and this one is "
            f"{draft.info.model_format}: merge the adapter into the weights before converting "
            "(PEFT's merge_and_unload), or build on the model's GGUF"
        )
    if draft.info is not None:
        check_adapter(info, draft.info, f"adapter {name}")
    return mf.Layer(mf.MEDIA_TYPE_ADAPTER, digest, path.stat().st_size)


@contextmanager
def _named_by_digest(registry: Registry, digest: str, name: str) -> Iterator[None]:
    """A blob's InvalidModelFile with `name` where the store's path was: the client knows the
    blob by its digest, and the daemon's directories are none of its business."""
    try:
        yield
    except InvalidModelFile as exc:
        text = exc.message.replace(f'"{registry.blobs.path(digest)}"', name)
        raise InvalidModelFile(text) from None


def _text_layer(registry: Registry, media_type: str, text: str, progress: Progress) -> mf.Layer:
    data = text.encode("utf-8")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    existed = registry.blobs.exists(digest)
    registry.blobs.put_bytes(data, expected_digest=digest)
    progress(f"{'using existing' if existed else 'creating new'} layer {digest}")
    return mf.Layer(media_type, digest, len(data))


def config_layer(
    registry: Registry, info: GGUFInfo | DirInfo | None, layers: tuple[mf.Layer, ...]
) -> mf.Layer:
    """The model config blob (format, family, size, file type, layer digests), stored."""
    config = mf.ModelConfig(
        model_format=info.model_format if isinstance(info, DirInfo) else "gguf",
        model_family=info.family if info else "",
        model_families=(info.family,) if info else (),
        model_type=info.parameter_size if info else "",
        file_type=info.file_type if info else "",
        diff_ids=tuple(layer.digest for layer in layers),
    )
    data = config.to_json()
    digest = registry.blobs.put_bytes(data)
    return mf.Layer(mf.MEDIA_TYPE_CONFIG, digest, len(data))
