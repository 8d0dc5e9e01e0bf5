"""Pull planning: what a pull of a Hugging Face repository fetches, asked of the hub first.

A repo's GGUF file is chosen by the tag (a file name or a quantization, Q4_K_M when none is
given), with the parts of a split GGUF, its vision projector (an `mmproj` file, chosen as
llama.cpp chooses it) and the repo's Ollama-style extras (template, params, system). A repo
without GGUF files on `main` is a model directory (EXL2, safetensors): the files of the branch
the tag names, or of `main`. Downloading the plan is `olla.registry.pull`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from olla.errors import InvalidRequest, NotFound, OllaError, UpstreamError
from olla.registry import manifests as mf
from olla.registry.catalog import Origin
from olla.registry.gguf_info import SPLIT_NAME
from olla.registry.model_dir import check_files, wanted_file
from olla.registry.names import ModelName
from olla.registry.projector import choose_projector

# When no quantization is asked for and Q4_K_M is missing, the first of these that exists.
_FALLBACK_QUANTS = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q4_0", "Q8_0", "Q6_K", "F16", "BF16")
# Ollama-style extras a repo may ship beside its GGUF: become the model's layers
_EXTRAS = {
    "template": mf.MEDIA_TYPE_TEMPLATE,
    "params": mf.MEDIA_TYPE_PARAMS,
    "system": mf.MEDIA_TYPE_SYSTEM,
}


@dataclass(frozen=True)
class RemoteFile:
    """One file of the repository, as the hub describes it."""

    path: str
    size: int
    sha256: str | None  # from the LFS metadata; None for small files kept in git
    blob_id: str | None = None  # the git blob id (sha1) the hub lists; of the content if not LFS

    @property
    def digest(self) -> str | None:
        return f"sha256:{self.sha256}" if self.sha256 else None


@dataclass(frozen=True)
class PullPlan:
    """What a pull fetches: the repo at one commit, the GGUF file(s) and the extras, or the
    files of a model directory."""

    name: ModelName
    origin: Origin  # its revision: the one asked for (a directory's branch), the commit aside
    commit: str
    # the parts of a split GGUF in order, else one; a directory's files, sorted by path
    model_files: tuple[RemoteFile, ...]
    # (media type, file): the projector first, then template, params, system; none for a directory
    extras: tuple[tuple[str, RemoteFile], ...]
    directory: bool = False  # an EXL2 or safetensors model: a layer per file, named by its path


def plan_pull(name: ModelName, origin: Origin, endpoint: str, token: str | None) -> PullPlan:
    """Ask the hub what `origin` is and choose its files; NotFound lists what the repo has."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    try:
        info = api.model_info(origin.repo, revision=origin.revision, files_metadata=True)
    except Exception as exc:  # huggingface-hub raises many kinds; map them in one place
        raise hub_error(exc, origin, endpoint) from None
    files = _remote_files(info)
    ggufs = [f for f in files if f.path.lower().endswith(".gguf")]
    if not ggufs:
        return _plan_directory(api, name, origin, info, endpoint)
    chosen = choose_gguf(ggufs, origin)
    extras = tuple((_EXTRAS[f.path], f) for f in files if f.path in _EXTRAS)
    projector = choose_projector(ggufs, chosen[0].path)
    if projector is not None:  # the model's vision projector, as llama.cpp's -hf takes it
        extras = ((mf.MEDIA_TYPE_PROJECTOR, projector), *extras)
    return PullPlan(name, origin, info.sha or origin.revision, tuple(chosen), extras)


def _remote_files(info: Any) -> list[RemoteFile]:
    """The files of a `model_info(..., files_metadata=True)` answer."""
    return [
        RemoteFile(
            s.rfilename,
            int(s.size or (s.lfs.size if s.lfs else 0)),
            s.lfs.sha256 if s.lfs else None,
            s.blob_id,
        )
        for s in info.siblings or []
    ]


def _plan_directory(
    api: Any, name: ModelName, origin: Origin, main_info: Any, endpoint: str
) -> PullPlan:
    """A repo without GGUF files: the model directory on the branch the tag names, else main's.

    NotFound when that branch does not exist or lacks a part of a model directory.
    """
    at = replace(origin, revision=origin.selector or "main")
    where = f"hf.co/{origin.repo} at revision {at.revision!r}"
    info = main_info
    if at.revision != origin.revision:
        try:
            info = api.model_info(origin.repo, revision=at.revision, files_metadata=True)
        except Exception as exc:
            if _is_revision_not_found(exc):
                raise NotFound(
                    f"hf.co/{origin.repo} has no GGUF files and no branch or revision "
                    f"{at.revision!r}; EXL2 repos keep each quantization on a branch (such as "
                    f"4.0bpw): pull hf.co/{origin.repo}:{{branch}}"
                ) from None
            raise hub_error(exc, at, endpoint) from None
    files = sorted((f for f in _remote_files(info) if wanted_file(f.path)), key=lambda f: f.path)
    try:
        check_files([f.path for f in files], f"{where} has no GGUF files and")
    except InvalidRequest as exc:
        raise NotFound(str(exc)) from None
    return PullPlan(name, at, info.sha or at.revision, tuple(files), (), directory=True)


def _is_revision_not_found(exc: BaseException) -> bool:
    from huggingface_hub.errors import RevisionNotFoundError

    return isinstance(exc, RevisionNotFoundError)


def choose_gguf(ggufs: Sequence[RemoteFile], origin: Origin) -> list[RemoteFile]:
    """The GGUF a tag names: a file name, or a quantization (Q4_K_M when none is given)."""
    models = [f for f in ggufs if "mmproj" not in f.path.lower()]  # vision projectors aside
    selector = origin.selector
    by_name = [
        f
        for f in models
        if selector
        and selector.lower()
        in (f.path.lower(), Path(f.path).name.lower(), Path(f.path).stem.lower())
    ]
    if by_name:
        return _with_splits(by_name[0], models)
    for quant in (selector,) if selector else _FALLBACK_QUANTS:
        token = re.compile(rf"(^|[-_./]){re.escape(quant)}([-_.]|$)", re.IGNORECASE)
        matches = sorted(
            (f for f in models if token.search(Path(f.path).name)), key=lambda f: f.path
        )
        if matches:
            return _with_splits(matches[0], models)
    if not selector and models:
        return _with_splits(sorted(models, key=lambda f: f.path)[0], models)
    have = ", ".join(sorted(f.path for f in models)) or "none"
    wanted = f"a GGUF file for {selector!r}" if selector else "a GGUF model file"
    raise NotFound(f"hf.co/{origin.repo} has no {wanted}; its GGUF files: {have}")


def _with_splits(first: RemoteFile, models: Sequence[RemoteFile]) -> list[RemoteFile]:
    """A split GGUF's parts (`-00001-of-00003.gguf`...) in order; else the file alone."""
    match = SPLIT_NAME.search(first.path)
    if match is None:
        return [first]
    prefix, count = first.path[: match.start()], int(match.group(2))
    parts = {f.path: f for f in models}
    wanted = [f"{prefix}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    missing = [w for w in wanted if w not in parts]
    if missing:
        raise NotFound(f"the split GGUF {first.path} lacks parts: {', '.join(missing)}")
    return [parts[w] for w in wanted]


def hub_error(exc: BaseException, origin: Origin, endpoint: str) -> OllaError:
    """One of olla's errors for what huggingface-hub raised."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo = f"hf.co/{origin.repo}"
    if isinstance(exc, OllaError):
        return exc
    if isinstance(exc, GatedRepoError):
        return NotFound(f"{repo} is gated: accept its terms on Hugging Face, then set HF_TOKEN")
    if isinstance(exc, RepositoryNotFoundError):
        return NotFound(f"{repo}: no such repository on Hugging Face (private? set HF_TOKEN)")
    if isinstance(exc, RevisionNotFoundError):
        return NotFound(f"{repo} has no revision {origin.revision!r}")
    if isinstance(exc, EntryNotFoundError):
        return NotFound(f"{repo}: {exc}")
    if isinstance(exc, HfHubHTTPError):
        return UpstreamError(f"Hugging Face ({endpoint}) answered with an error: {exc}")
    return UpstreamError(
        f"cannot reach Hugging Face at {endpoint} ({type(exc).__name__}: {exc}); check the "
        "network connection (or HF_ENDPOINT), then pull again: it goes on from what it has"
    )


def hub_settings() -> tuple[str, str | None]:
    """`HF_ENDPOINT` (default huggingface.co) and `HF_TOKEN`, read now, not at import."""
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"
    return endpoint, os.environ.get("HF_TOKEN") or None
