"""Pull: a plan's files (`olla.registry.pull_plan`) from Hugging Face into the store.

A model directory's files are each stored as a layer named by its path.

Everything on the wire goes through huggingface-hub (`HF_ENDPOINT` and `HF_TOKEN` honoured). Files
download into `<models>/partial/` (named by their sha256, so two model names for one file share
it), where what an interrupted or stopped pull got stays, and the next pull goes on from there (a
dropped connection within a pull is retried with ranged GETs too). Each file is checked against
the sha256 of the hub's LFS metadata, then moved into the blob store, and the manifest is written
only once every blob is there, so a half-pulled model is never visible. `report` gets Ollama's
/api/pull status lines.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from olla.errors import InvalidDigest, StorageError, UpstreamError
from olla.registry import manifests as mf
from olla.registry.create import config_layer
from olla.registry.fetch import (
    Downloads,
    Report,
    Wanted,
    check_room,
    check_stop,
    fetch_blob,
    partial_path,
)
from olla.registry.gguf_info import GGUFInfo, read_gguf_info
from olla.registry.model_dir import CONFIG, DirInfo, read_dir_info
from olla.registry.pull_plan import PullPlan, RemoteFile, hub_error
from olla.registry.store import Registry

log = logging.getLogger(__name__)


def run_pull(
    plan: PullPlan,
    registry: Registry,
    report: Report,
    endpoint: str,
    token: str | None,
    stop: threading.Event | None = None,
    downloads: Downloads | None = None,
) -> mf.Manifest:
    """Download, verify and store the plan's files, then write the manifest.

    Setting `stop` ends the pull at the next chunk (Interrupted); its partial files stay.
    """
    stop = stop or threading.Event()
    downloads = downloads or Downloads()
    files = [(mf.MEDIA_TYPE_MODEL, f) for f in plan.model_files] + list(plan.extras)
    _check_space(plan, registry, [f for _, f in files])

    def fetch(remote: RemoteFile) -> str:
        return _fetch(plan, remote, registry, report, endpoint, token, stop, downloads)

    info: GGUFInfo | DirInfo
    if plan.directory:
        layers, info = _directory_layers(plan, registry, fetch)
        report({"status": "writing manifest"})
    else:
        layers = []
        for media_type, f in files:
            digest = fetch(f)
            layers.append(mf.Layer(media_type, digest, registry.blobs.size(digest)))
        report({"status": "writing manifest"})
        info = read_gguf_info(registry.blobs.path(layers[0].digest))
    manifest = mf.Manifest(config=config_layer(registry, info, tuple(layers)), layers=tuple(layers))
    registry.write_manifest(plan.name, manifest)
    shutil.rmtree(_partial_dir(registry, plan), ignore_errors=True)
    log.info(
        "pulled model",
        extra={"model": str(plan.name), "repo": plan.origin.repo, "commit": plan.commit},
    )
    report({"status": "success"})
    return manifest


def _directory_layers(
    plan: PullPlan, registry: Registry, fetch: Callable[[RemoteFile], str]
) -> tuple[list[mf.Layer], DirInfo]:
    """A layer per file of a directory model, and what its config.json says. config.json comes
    first, so that a model olla cannot load (GPTQ, a broken config) stops before the weights."""
    config = next(f for f in plan.model_files if f.path == CONFIG)  # check_files saw it
    digests = {config.path: fetch(config)}
    where = f"{config.path} of hf.co/{plan.origin.repo} at revision {plan.origin.revision!r}"
    info = read_dir_info(registry.blobs.path(digests[config.path]).read_bytes(), where)
    layers = []
    for f in plan.model_files:
        digest = digests.get(f.path) or fetch(f)
        layers.append(
            mf.Layer(mf.MEDIA_TYPE_FILE, digest, registry.blobs.size(digest), name=f.path)
        )
    return layers, info


def _partial_dir(registry: Registry, plan: PullPlan) -> Path:
    """Where files without an LFS sha256 (small ones kept in git) download, per model."""
    return registry.root / "partial" / "--".join(plan.name.filepath().parts)


def _partial_path(registry: Registry, plan: PullPlan, remote: RemoteFile) -> Path:
    if remote.digest:
        return partial_path(registry, remote.digest)
    # a directory model's files may share a name in different folders: the path names them
    return _partial_dir(registry, plan) / f"{remote.path.replace('/', '--')}.part"


def _check_space(plan: PullPlan, registry: Registry, files: Sequence[RemoteFile]) -> None:
    """StorageError (507) before a byte is fetched when the rest of the pull cannot fit."""
    wanted = [Wanted(f.digest, f.size, "", _partial_path(registry, plan, f)) for f in files]
    check_room(registry, wanted, str(plan.name))


def _fetch(
    plan: PullPlan,
    remote: RemoteFile,
    registry: Registry,
    report: Report,
    endpoint: str,
    token: str | None,
    stop: threading.Event,
    downloads: Downloads,
) -> str:
    """The digest of `remote` in the store: already there, or downloaded, verified and added."""
    digest = remote.digest
    if digest is None and plan.directory:
        digest = _stored_copy(registry, remote)
    label = f"pulling {(remote.sha256 or '')[:12] or Path(remote.path).name}"
    wanted = Wanted(digest, remote.size, label, _partial_path(registry, plan, remote))

    def download(part: Path, progress: Callable[[int], None]) -> None:
        _download(plan, remote, part, progress, endpoint, token, stop)

    def mismatch(exc: InvalidDigest) -> UpstreamError:
        return UpstreamError(
            f"{remote.path} from hf.co/{plan.origin.repo} does not match the sha256 the hub "
            f"lists ({exc}); the download was discarded, pull again"
        )

    stored = fetch_blob(registry, wanted, download, report, stop, downloads, mismatch)
    if remote.path == "params":
        _check_params(registry.blobs.path(stored), remote)
    return stored


def _stored_copy(registry: Registry, remote: RemoteFile) -> str | None:
    """The stored blob of a small file kept in git (no LFS sha256 to look it up by): a file
    layer of that path whose content has the git blob id the hub lists, so that pulling a
    directory model again fetches nothing."""
    if remote.blob_id is None:
        return None
    seen: set[str] = set()
    for entry in registry.list_models():
        for layer in entry.manifest.layers_of(mf.MEDIA_TYPE_FILE):
            if layer.name != remote.path or layer.size != remote.size or layer.digest in seen:
                continue
            seen.add(layer.digest)
            try:
                content = registry.blobs.path(layer.digest).read_bytes()
            except OSError:
                continue  # pruned meanwhile: download it
            if _git_blob_id(content) == remote.blob_id:
                return layer.digest
    return None


def _git_blob_id(content: bytes) -> str:
    """The id git gives a blob of this content, which the hub lists for files not in LFS."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _download(
    plan: PullPlan,
    remote: RemoteFile,
    part: Path,
    progress: Callable[[int], None],
    endpoint: str,
    token: str | None,
    stop: threading.Event,
) -> None:
    """`remote` in `part`, resumed from what an earlier pull left there.

    huggingface-hub's `hf_hub_download` starts each call in a fresh temporary file and deletes it
    on failure, so olla keeps its own partial file and has the library fetch the rest of it
    (`http_get` with `resume_size`: ranged GETs, its retries and errors). Plain HTTPS, not Xet.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    try:
        part.parent.mkdir(parents=True, exist_ok=True)
        url = hf_hub_url(plan.origin.repo, remote.path, revision=plan.commit, endpoint=endpoint)
        meta = get_hf_file_metadata(url, token=token, endpoint=endpoint)
        headers = build_hf_headers(token=token)
        location = meta.location or url
        if urlsplit(location).netloc != urlsplit(url).netloc:
            headers.pop("authorization", None)  # a signed CDN address: the token stays home
        with open(part, "ab") as f:
            have = f.tell()
            if meta.size is not None and have > meta.size:
                f.truncate(0)  # not a prefix of this file: start again
                have = 0
            if have:
                log.info(
                    "resuming %s at %d bytes", remote.path, have, extra={"repo": plan.origin.repo}
                )
            http_get(
                location,
                f,
                resume_size=have,
                headers=headers,
                expected_size=meta.size,
                displayed_filename=remote.path,
                tqdm_class=_progress_class(progress, stop),
            )
            if have and meta.size is not None and have == meta.size:
                progress(have)  # complete already: http_get had nothing to fetch
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageError(
                f"the disk is full while pulling {remote.path} ({exc.strerror}); free space "
                "and pull again: it goes on from what was downloaded (the store was not changed)"
            ) from None
        raise hub_error(exc, plan.origin, endpoint) from None
    except Exception as exc:
        raise hub_error(exc, plan.origin, endpoint) from None


def _progress_class(progress: Callable[[int], None], stop: threading.Event) -> Any:
    """A tqdm class for huggingface-hub that reports bytes so far, at most every 0.1 s, and
    ends the download (Interrupted, out of `http_get`) once `stop` is set."""
    from huggingface_hub.utils import tqdm as hub_tqdm

    class Progress(hub_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True  # no terminal output from the daemon
            super().__init__(*args, **kwargs)
            self._done = int(kwargs.get("initial") or 0)  # a resumed download starts here
            self._total = int(kwargs.get("total") or 0)
            self._last = time.monotonic()
            progress(self._done)

        def update(self, n: float | None = 1) -> bool | None:
            # called by http_get's one thread, per chunk it writes
            check_stop(stop)
            self._done += int(n or 0)
            now = time.monotonic()
            if now - self._last >= 0.1 or self._done >= self._total:
                self._last = now
                progress(self._done)
            return None

    return Progress


def _check_params(path: Path, remote: RemoteFile) -> None:
    try:
        params = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UpstreamError(f"the repo's params file is not JSON ({exc})") from None
    if not isinstance(params, dict):
        raise UpstreamError(f"the repo's {remote.path} file is not a JSON object")
