"""What a GGUF model file says about itself, for `olla show`, `/api/show` and `olla create`.

Parsing is done by `gguf.GGUFReader`, with a fast path for array values (the vocabulary) and a
bounds check so that a truncated file gives a clear `InvalidModelFile`, never a numpy traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType, LlamaFileType

from olla.errors import InvalidModelFile

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
_SHOWN_ARRAY_LEN = 32  # Ollama's /api/show hides longer arrays (the vocabulary) unless verbose
_UNITS = ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K"))
# llama.cpp's split GGUF names: <prefix>-00001-of-00003.gguf, the first part carrying the metadata
SPLIT_NAME = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class GGUFInfo:
    path: str
    version: int
    architecture: str
    name: str | None
    parameter_count: int  # general.parameter_count, else the tensors' element counts summed
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    head_count: int | None
    head_count_kv: int | None
    file_type: str  # quantization level: "Q4_1", "F16", "unknown" when absent
    chat_template: str | None
    tensor_count: int
    # Every KV, GGUF.version/tensor_count/kv_count included; kept out of repr (the vocabulary).
    metadata: Mapping[str, object] = field(repr=False, hash=False)
    tensor_bytes: Mapping[str, int] = field(default_factory=dict, repr=False, hash=False)
    # each tensor's dimensions in GGML order (ne[0], the row length, first), as llama.cpp checks
    tensor_shapes: Mapping[str, tuple[int, ...]] = field(
        default_factory=dict, repr=False, hash=False
    )

    @property
    def family(self) -> str:
        return self.architecture

    @property
    def parameter_size(self) -> str:
        return parameter_size(self.parameter_count)

    def model_info(self, verbose: bool = False) -> dict[str, object]:
        """The `/api/show` `model_info`: sorted like Ollama's (a Go map marshals sorted)."""
        info: dict[str, object] = {}
        for key, value in self.metadata.items():
            if key.startswith("GGUF."):
                continue
            if isinstance(value, list):  # copied: callers must not mutate `metadata`
                value = list(value) if verbose or len(value) <= _SHOWN_ARRAY_LEN else None
            info[key] = value
        info["general.architecture"] = self.architecture
        info["general.parameter_count"] = self.parameter_count
        file_type = _int(self.metadata, "general.file_type")
        info["general.file_type"] = int(LlamaFileType.GUESSED) if file_type is None else file_type
        return dict(sorted(info.items()))


def parameter_size(count: int) -> str:
    """Ollama's human form: 134515008 -> "134.52M", 1_235_814_400 -> "1.24B", 999 -> "999"."""
    for i, (scale, suffix) in enumerate(_UNITS):
        if count >= scale:
            text = f"{count / scale:.2f}"
            if float(text) >= 1000 and i > 0:  # 999_999_999 rounds to "1000.00M": say "1B"
                scale, suffix = _UNITS[i - 1]
                text = f"{count / scale:.2f}"
            return text.rstrip("0").rstrip(".") + suffix
    return str(count)


def check_gguf_header(path: str | os.PathLike[str]) -> int:
    """Check the magic and version without parsing the rest; return the version."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise InvalidModelFile(f'model file "{where}" does not exist') from None
    except OSError as exc:
        raise InvalidModelFile(f'"{where}" cannot be read: {exc.strerror or exc}') from None
    if not head:
        raise InvalidModelFile(f'"{where}" is empty')
    if head[:4] != _MAGIC:
        # never the bytes read: they may be a secret's, and the error goes to a client
        raise InvalidModelFile(
            f'"{where}" is not a GGUF model file (it does not start with "GGUF")'
        )
    if len(head) < 8:
        raise InvalidModelFile(f'"{where}" is a damaged GGUF file: it ends inside its header')
    version = int.from_bytes(head[4:8], "little")
    if version & 0xFFFF == 0 and version >> 24 in _VERSIONS:  # GGUFReader's own byte-order test
        raise InvalidModelFile(f'"{where}" is a big-endian GGUF file; olla reads little-endian')
    if version not in _VERSIONS:
        raise InvalidModelFile(
            f'"{where}": unsupported GGUF version {version} (olla reads versions 2 and 3)'
        )
    return version


def read_gguf_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """Parse the header, metadata and tensor infos; raise InvalidModelFile if not a sound GGUF.

    The first part of a split GGUF, named as llama.cpp names them, counts its siblings' tensors
    too (the weights the memory estimate sums are spread over every part).
    """
    where = os.fspath(path)
    version = check_gguf_header(where)
    try:
        metadata, tensors = _parse(where)
        for part in _other_parts(where, metadata):
            tensors += _parse(part)[1]
    except OSError as exc:
        reason = f'"{exc.filename or where}" cannot be read: {exc.strerror or exc}'
    except Exception as exc:  # the reader fails in many ways on bad bytes; all mean "damaged"
        reason = f'"{where}" is a damaged GGUF file: {_reason(exc)}'
    else:
        return _info(where, version, metadata, tensors)
    # Raised outside `except`, unchained: the traceback would keep the reader's frames, and so
    # the file's memory map, alive for as long as the error is.
    raise InvalidModelFile(reason)


def _other_parts(path: str, metadata: Mapping[str, object]) -> list[str]:
    """Paths of parts 2..n when `path` is the first part of a split GGUF, else none."""
    match = SPLIT_NAME.search(path)
    count = metadata.get("split.count")
    if match is None or match.group(1) != "00001" or not isinstance(count, int) or count < 2:
        return []
    prefix = path[: match.start()]
    return [f"{prefix}-{i:05d}-of-{count:05d}.gguf" for i in range(2, count + 1)]


_Tensor = tuple[str, int, int, tuple[int, ...]]  # name, elements, bytes, shape (GGML order)


def _parse(path: str) -> tuple[dict[str, object], list[_Tensor]]:
    """Metadata, and (name, elements, bytes, shape) of every tensor."""
    # Only plain Python values leave this frame, so the mapping is unmapped when it returns.
    reader = _Reader(path)
    metadata = {name: _value(f.parts, f.data, f.types) for name, f in reader.fields.items()}
    return metadata, [
        (t.name, int(t.n_elements), int(t.n_bytes), tuple(int(n) for n in t.shape))
        for t in reader.tensors
    ]


def _value(parts: list[Any], data: list[int], types: list[GGUFValueType]) -> object:
    items: list[object] = []
    for index in data:
        part = parts[index]
        if types[-1] == GGUFValueType.STRING:
            items.append(part.tobytes().decode("utf-8", errors="replace"))
        elif types[-1] == GGUFValueType.FLOAT32:  # shortest repr: 1e-05, not 9.99999974e-06
            items.extend(float(text) for text in part.astype(str))
        else:
            items.extend(part.tolist())
    return items if types[0] == GGUFValueType.ARRAY else items[0]


def _info(path: str, version: int, meta: dict[str, object], tensors: list[_Tensor]) -> GGUFInfo:
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise InvalidModelFile(f'"{path}" has no general.architecture, so it is not a model')
    count = _int(meta, "general.parameter_count")
    return GGUFInfo(
        path=path,
        version=version,
        architecture=arch,
        name=_str(meta, "general.name"),
        parameter_count=sum(t[1] for t in tensors) if count is None else count,
        context_length=_int(meta, f"{arch}.context_length"),
        embedding_length=_int(meta, f"{arch}.embedding_length"),
        block_count=_int(meta, f"{arch}.block_count"),
        head_count=_int(meta, f"{arch}.attention.head_count"),
        head_count_kv=_int(meta, f"{arch}.attention.head_count_kv"),
        file_type=_file_type_name(_int(meta, "general.file_type")),
        chat_template=_str(meta, "tokenizer.chat_template"),
        tensor_count=len(tensors),
        metadata=MappingProxyType(meta),
        tensor_bytes=MappingProxyType({t[0]: t[2] for t in tensors}),
        tensor_shapes=MappingProxyType({t[0]: t[3] for t in tensors}),
    )


def _int(meta: Mapping[str, object], key: str) -> int | None:
    value = meta.get(key)
    if isinstance(value, list) and value:  # per-layer head counts (e.g. OpenELM): the largest,
        value = max(value)  # as Ollama's UintOrMaxArrayValue does
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(meta: Mapping[str, object], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) else None


def _file_type_name(code: int | None) -> str:
    names = {int(kind): kind.name for kind in LlamaFileType if kind != LlamaFileType.GUESSED}
    name = names.get(code) if code is not None else None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_") if name else "unknown"


class _Reader(GGUFReader):
    """GGUFReader, made fast on vocabularies and strict about the end of the file.

    Both hooks are reader internals (stable from gguf 0.10 to 0.19); were they renamed, reading
    would only get slower and truncation would surface as the reader's own errors, still caught.
    """

    def _get(self, offset: int, dtype: Any, count: int = 1, *args: Any, **kwargs: Any) -> Any:
        # A short read would otherwise yield a short array, and a truncated string passes silently.
        _need(self.data, int(offset) + np.dtype(dtype).itemsize * int(count))
        return super()._get(offset, dtype, count, *args, **kwargs)

    def _get_field_parts(  # type: ignore[override]
        self, offset: int, raw_type: int, *args: Any, **kwargs: Any
    ) -> Any:
        # The stock reader builds several arrays per array element (1.5 s for SmolLM2's vocab);
        # one view per numeric array and a bytes walk for string arrays keep the same parts shape.
        if args or kwargs or raw_type != GGUFValueType.ARRAY:
            return super()._get_field_parts(offset, raw_type, *args, **kwargs)
        view = self.data.view(np.ndarray)  # a plain view: np.memmap slices ~5x slower
        _need(view, offset + 12)
        item_type, length = view[offset : offset + 4].view("<u4"), view[offset + 4 : offset + 12]
        sub, count, pos = GGUFValueType(int(item_type[0])), int(length.view("<u8")[0]), offset + 12
        parts: list[Any] = [item_type, length.view("<u8")]
        scalar = self.gguf_scalar_to_np.get(sub)
        if scalar is not None:
            values = self._get(pos, scalar, count)
            return 12 + values.nbytes, [*parts, values], [2], [GGUFValueType.ARRAY, sub]
        if sub != GGUFValueType.STRING:  # nested arrays: rare, leave them to the stock code
            return super()._get_field_parts(offset, raw_type)
        raw, indexes = view.data, []
        for _ in range(count):
            _need(view, pos + 8)
            size = int.from_bytes(raw[pos : pos + 8], "little")
            _need(view, pos + 8 + size)
            indexes.append(len(parts) + 1)
            parts += [view[pos : pos + 8].view("<u8"), view[pos + 8 : pos + 8 + size]]
            pos += 8 + size
        return pos - offset, parts, indexes, [GGUFValueType.ARRAY, sub]


def _reason(exc: Exception) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # str(KeyError) quotes
    return str(text) or type(exc).__name__


def _need(view: np.ndarray[Any, Any], end: int) -> None:
    if end > len(view):
        raise EOFError(f"truncated: it has {len(view)} bytes but needs at least {end}")
