"""Vision projectors (llama.cpp's `mmproj` GGUFs): which GGUF is one, and which of a repo's
projector files goes with a model file.

A projector is told from a model by its metadata, as Ollama tells it (`isProjectorGGUF`):
`general.type` "mmproj" or "projector", or an encoder's keys (`clip.*`, or `{arch}.vision.*`)
without the language model's `{arch}.block_count`. A pull picks the repo's projector as
llama.cpp's `-hf` does (`find_best_mmproj`): the one whose precision is nearest the model's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Protocol, TypeVar

from olla.registry.gguf_info import GGUFInfo

_KINDS = ("mmproj", "projector")  # general.type of a projector file
# the quantization at the end of a GGUF file's stem: "-Q4_K_M", ".f16", "-BF16" (a split's
# "-00001-of-00003" removed first)
_SPLIT_SUFFIX = re.compile(r"-\d{5}-of-\d{5}$", re.IGNORECASE)
_QUANT_TAG = re.compile(r"[-.]([A-Za-z0-9_]+)$")


def is_projector(info: GGUFInfo) -> bool:
    """Whether the GGUF is a vision (or audio) projector rather than a language model."""
    meta = info.metadata
    if meta.get("general.type") in _KINDS:
        return True
    if info.block_count:  # a language model's blocks: even one with a vision tower built in
        return False
    arch = info.architecture
    return arch == "clip" or any(
        key.startswith(("clip.", f"{arch}.vision.", f"{arch}.audio.")) for key in meta
    )


class NamedFile(Protocol):
    """A repo's file, as far as choosing one goes: its path."""

    @property
    def path(self) -> str: ...


F = TypeVar("F", bound=NamedFile)


def quant_tag(path: str) -> str:
    """The quantization tag at the end of a GGUF file's name, upper case ("Q4_K_M", "F16"); ""
    when it has none."""
    stem = _SPLIT_SUFFIX.sub("", PurePosixPath(path).name.removesuffix(".gguf"))
    match = _QUANT_TAG.search(stem)
    return match.group(1).upper() if match else ""


def precision_bits(path: str) -> int:
    """The bits of a file's quantization tag, as llama.cpp reads them: Q4_K_M 4, Q8_0 8, F16
    and BF16 16, F32 32; 0 when the name has none."""
    digits = re.search(r"\d+", quant_tag(path))
    return int(digits.group()) if digits else 0


def choose_projector(files: Sequence[F], model_path: str) -> F | None:
    """The repo's projector for `model_path`, as llama.cpp's `-hf` chooses it: of the
    `*mmproj*.gguf` files in the model's directory or one above it, the nearest directory
    first, then one of the model's own quantization (an F16 projector for an F16 model, where
    llama.cpp would take BF16 as soon), then the precision nearest the model's (Q8_0 for a
    Q4_K_M model, of F16, BF16 and Q8_0), then the first by path."""
    model_dir = PurePosixPath(model_path).parent.parts
    tag, bits = quant_tag(model_path), precision_bits(model_path)
    best: tuple[int, bool, int, str] | None = None
    chosen = None
    for f in files:
        path = PurePosixPath(f.path)
        if "mmproj" not in path.name.lower() or path.suffix.lower() != ".gguf":
            continue
        where = path.parent.parts
        if model_dir[: len(where)] != where:
            continue  # another model's directory
        exact = bool(tag) and quant_tag(f.path) == tag
        rank = (-len(where), not exact, abs(precision_bits(f.path) - bits), f.path)
        if best is None or rank < best:
            best, chosen = rank, f
    return chosen
