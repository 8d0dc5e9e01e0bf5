"""The fake Hub against the real `huggingface_hub` client: what olla's pull code can rely on.

Besides checking `tests.fake_hf.FakeHub`, these tests pin down how `huggingface_hub` 2.4 behaves:
where a download's temporary file lives, how (and how far) it resumes, whether it checks sha256,
and what a second call does. If an upgrade changes one of these, a test here says which.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx2
import pytest
from huggingface_hub import HfApi, constants, file_download, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.conftest import wait_for
from tests.fake_hf import FakeHub, git_blob_id

REPO = "olla-test/tiny"
MODEL = "tiny.gguf"
MiB = 1024 * 1024
#: huggingface_hub writes a download to disk in pieces of this size (10 MiB in 2.4).
PIECE = constants.DOWNLOAD_CHUNK_SIZE


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(autouse=True)
def hf_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep huggingface_hub away from the user's token, cache, Xet cache and offline setting.

    Its constants are read from the environment at import time, so they are patched directly;
    the environment is set too, for anything that reads it later.
    """
    home = tmp_path / "hf_home"
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_XET_CACHE", str(home / "xet"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return home


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        yield running


@pytest.fixture
def small() -> bytes:
    """An LFS file small enough to stay in memory."""
    return os.urandom(300_000)


@pytest.fixture
def big(tmp_path: Path) -> Path:
    """A file on disk, bigger than one of huggingface_hub's 10 MiB pieces (so it can resume)."""
    path = tmp_path / "big.gguf"
    path.write_bytes(os.urandom(PIECE + 2 * MiB))
    return path


def download(endpoint: str, filename: str = MODEL, **kwargs: Any) -> str:
    """`hf_hub_download` from `endpoint`, without any token."""
    kwargs.setdefault("repo_id", REPO)
    result = hf_hub_download(filename=filename, endpoint=endpoint, token=False, **kwargs)
    assert isinstance(result, str)
    return result


def gets(hub: FakeHub) -> list[tuple[str, str, str | None]]:
    return [r for r in hub.requests if r[0] == "GET" and r[1].startswith("/cdn/")]


# -- metadata ----------------------------------------------------------------------------------


def test_model_info_reports_sizes_and_lfs_sha256(hub: FakeHub, small: bytes) -> None:
    commit = hub.add_repo(REPO, {MODEL: small, "README.md": b"# tiny\n"})
    api = HfApi(endpoint=hub.url, token=False)

    info = api.model_info(REPO, files_metadata=True)

    assert info.sha == commit and re.fullmatch(r"[0-9a-f]{40}", commit)
    siblings = {s.rfilename: s for s in info.siblings or []}
    model, readme = siblings[MODEL], siblings["README.md"]
    assert model.size == len(small)
    assert model.lfs is not None
    assert model.lfs.sha256 == sha256(small) and model.lfs.size == len(small)
    assert model.lfs.pointer_size == len(hub.file(REPO, MODEL).pointer)
    assert readme.size == 7 and readme.lfs is None and readme.blob_id == git_blob_id(b"# tiny\n")
    assert ("GET", f"/api/models/{REPO}", None) in hub.requests

    # Without files_metadata the Hub only lists names; a commit hash works as a revision.
    bare = api.model_info(REPO, revision=commit)
    assert {s.rfilename: s.size for s in bare.siblings or []} == {MODEL: None, "README.md": None}
    assert ("GET", f"/api/models/{REPO}/revision/{commit}", None) in hub.requests


def test_list_repo_files_and_tree(hub: FakeHub, small: bytes) -> None:
    hub.add_repo(REPO, {MODEL: small, "README.md": b"x", "extra/config.json": b"{}"})
    api = HfApi(endpoint=hub.url, token=False)

    assert sorted(api.list_repo_files(REPO)) == ["README.md", "extra/config.json", MODEL]
    root = {e.path: e for e in api.list_repo_tree(REPO)}
    assert sorted(root) == ["README.md", "extra", MODEL]
    model = root[MODEL]
    assert getattr(model, "lfs", None) is not None
    assert model.lfs.sha256 == sha256(small)  # type: ignore[union-attr]
    assert [e.path for e in api.list_repo_tree(REPO, "extra")] == ["extra/config.json"]
    assert ("GET", f"/api/models/{REPO}/tree/main", None) in hub.requests


def test_a_repo_can_have_branches_with_other_files(
    hub: FakeHub, small: bytes, tmp_path: Path
) -> None:
    """As EXL2 repos keep each quantization on a branch: `add_revision` adds a commit."""
    main = hub.add_repo(REPO, {"README.md": b"# main\n"})
    branch = hub.add_repo(
        REPO, {MODEL: small, "README.md": b"# 4.0bpw\n"}, refs=("4.0bpw",), add_revision=True
    )
    api = HfApi(endpoint=hub.url, token=False)
    cache = tmp_path / "cache"

    assert main != branch and (hub.commit(REPO), hub.commit(REPO, "4.0bpw")) == (main, branch)
    assert hub.file(REPO, MODEL, "4.0bpw").sha256 == sha256(small)
    assert [s.rfilename for s in api.model_info(REPO).siblings or []] == ["README.md"]
    info = api.model_info(REPO, revision="4.0bpw", files_metadata=True)
    assert info.sha == branch
    assert {s.rfilename: s.size for s in info.siblings or []} == {MODEL: len(small), "README.md": 9}
    assert sorted(api.list_repo_files(REPO, revision="4.0bpw")) == ["README.md", MODEL]
    assert api.model_info(REPO, revision=main).sha == main  # a commit hash still names its files
    assert Path(download(hub.url, "README.md", cache_dir=cache)).read_bytes() == b"# main\n"
    readme = download(hub.url, "README.md", revision="4.0bpw", cache_dir=cache)
    assert Path(readme).read_bytes() == b"# 4.0bpw\n"
    assert Path(download(hub.url, revision="4.0bpw", cache_dir=cache)).read_bytes() == small
    with pytest.raises(RemoteEntryNotFoundError):
        download(hub.url, cache_dir=cache)  # main has no model file

    # Adding the branch again moves it to the new commit; the old one keeps its hash.
    moved = hub.add_repo(REPO, {"README.md": b"moved"}, refs=("4.0bpw",), add_revision=True)
    assert api.model_info(REPO, revision="4.0bpw").sha == moved
    assert api.model_info(REPO, revision=branch).sha == branch
    # Without add_revision the repo is replaced, branches and all.
    hub.add_repo(REPO, {"README.md": b"# main\n"})
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="4.0bpw")


# -- downloads ---------------------------------------------------------------------------------


def test_download_lfs_file_over_plain_http(hub: FakeHub, small: bytes, tmp_path: Path) -> None:
    commit = hub.add_repo(REPO, {MODEL: small})
    cache = tmp_path / "cache"

    path = download(hub.url, cache_dir=cache)

    assert Path(path).read_bytes() == small
    storage = cache / "models--olla-test--tiny"
    assert path == str(storage / "snapshots" / commit / MODEL)
    assert (storage / "blobs" / sha256(small)).read_bytes() == small
    assert (storage / "refs" / "main").read_text() == commit
    # A HEAD on resolve (302 to the CDN origin, not followed), then one plain GET of the blob.
    assert hub.requests == [
        ("HEAD", f"/{REPO}/resolve/main/{MODEL}", None),
        ("GET", f"/cdn/{sha256(small)}", None),
    ]
    assert hub.bytes_served == len(small) and hub.bytes_served_by_file == {MODEL: len(small)}


def test_download_regular_file_and_from_disk(hub: FakeHub, tmp_path: Path) -> None:
    on_disk = tmp_path / "weights.bin"
    on_disk.write_bytes(os.urandom(3 * MiB + 17))
    hub.add_repo(REPO, {"config.json": b'{"a": 1}', "weights.bin": on_disk})

    config = download(hub.url, "config.json", cache_dir=tmp_path / "cache")
    weights = download(hub.url, "weights.bin", local_dir=tmp_path / "local")

    assert Path(config).read_bytes() == b'{"a": 1}'
    assert Path(config).resolve().name == git_blob_id(b'{"a": 1}')  # non-LFS blobs: git sha1
    assert weights == str(tmp_path / "local" / "weights.bin")
    assert file_sha256(weights) == file_sha256(on_disk)
    assert ("GET", f"/{REPO}/resolve/main/config.json", None) in hub.requests
    assert hub.bytes_served_by_file == {"config.json": 8, "weights.bin": 3 * MiB + 17}


def test_env_endpoint_in_a_subprocess(hub: FakeHub, small: bytes, tmp_path: Path) -> None:
    """HF_ENDPOINT works for a process that imports huggingface_hub after it is set (the daemon)."""
    hub.add_repo(REPO, {MODEL: small})
    code = (
        "import sys; from huggingface_hub import hf_hub_download as d; "
        f"print(d({REPO!r}, {MODEL!r}, cache_dir=sys.argv[1], token=False))"
    )
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "cache")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(out.stdout.strip()).read_bytes() == small


def test_snapshot_download(hub: FakeHub, small: bytes, tmp_path: Path) -> None:
    commit = hub.add_repo(REPO, {MODEL: small, "README.md": b"hi", "extra/a.json": b"{}"})

    folder = snapshot_download(REPO, cache_dir=tmp_path / "c", endpoint=hub.url, token=False)

    assert Path(folder).name == commit
    assert (Path(folder) / MODEL).read_bytes() == small
    assert (Path(folder) / "extra" / "a.json").read_bytes() == b"{}"
    assert ("GET", f"/api/models/{REPO}/revision/main", None) in hub.requests
    assert ("GET", f"/api/models/{REPO}/tree/{commit}", None) in hub.requests


# -- interrupted downloads ---------------------------------------------------------------------


def test_drop_is_resumed_within_the_call_from_the_last_full_piece(
    hub: FakeHub, big: Path, tmp_path: Path
) -> None:
    """http_get retries a cut body itself, with `Range: bytes=N-`, N = the 10 MiB pieces on disk."""
    hub.add_repo(REPO, {MODEL: big})
    size = big.stat().st_size
    hub.drop_after = PIECE + MiB

    path = download(hub.url, cache_dir=tmp_path / "cache")

    assert file_sha256(path) == file_sha256(big)
    assert [r[2] for r in gets(hub)] == [None, f"bytes={PIECE}-"]
    # The MiB received past the last full piece was thrown away and fetched again.
    assert hub.bytes_served == (PIECE + MiB) + (size - PIECE)
    assert hub.drop_after is None


def test_drop_before_a_full_piece_restarts_from_zero(
    hub: FakeHub, small: bytes, tmp_path: Path
) -> None:
    hub.add_repo(REPO, {MODEL: small})
    hub.drop_after = 100_000

    path = download(hub.url, cache_dir=tmp_path / "cache")

    assert Path(path).read_bytes() == small
    assert [r[2] for r in gets(hub)] == [None, None]
    assert hub.bytes_served == 100_000 + len(small)


def test_failed_download_leaves_nothing_and_next_call_starts_over(
    hub: FakeHub, big: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No resume across calls in 2.4: each call downloads to its own temp file, deleted on error."""
    monkeypatch.setattr(file_download, "time", SimpleNamespace(sleep=lambda _: None))  # 5 x 1 s
    hub.add_repo(REPO, {MODEL: big})
    size = big.stat().st_size
    cache = tmp_path / "cache"
    # One cut after PIECE + 1 MiB, then 5 cuts with no body byte: http_get's 5 retries run out.
    hub.queue_drops(PIECE + MiB, 0, 0, 0, 0, 0)

    with pytest.raises(httpx2.RemoteProtocolError):
        download(hub.url, cache_dir=cache)

    assert [r[2] for r in gets(hub)] == [None] + [f"bytes={PIECE}-"] * 5
    blobs = cache / "models--olla-test--tiny" / "blobs"
    assert list(blobs.iterdir()) == []
    hub.reset_counters()

    path = download(hub.url, cache_dir=cache)

    assert file_sha256(path) == file_sha256(big)
    assert [r[2] for r in gets(hub)] == [None]
    assert hub.bytes_served == size


@pytest.mark.parametrize("target", ["cache_dir", "local_dir"])
def test_incomplete_file_grows_while_downloading(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """Where the partial file is, and that it grows by DOWNLOAD_CHUNK_SIZE (patched smaller)."""
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    data = os.urandom(MiB)
    hub.add_repo(REPO, {MODEL: data})
    hub.delay_per_chunk = 0.02  # 16 chunks of 64 KiB: about a third of a second
    root = tmp_path / target
    if target == "cache_dir":
        folder, pattern = (
            root / "models--olla-test--tiny" / "blobs",
            rf"{sha256(data)}\.[0-9a-f]{{8}}",
        )
    else:
        folder, pattern = (
            root / ".cache" / "huggingface" / "download",
            rf"\S{{28}}\.{sha256(data)}\.[0-9a-f]{{8}}",
        )
    result: list[str] = []
    where: dict[str, Any] = {target: root}
    worker = threading.Thread(target=lambda: result.append(download(hub.url, **where)))
    worker.start()
    sizes: set[int] = set()
    names: set[str] = set()

    def partial_seen() -> bool:
        for path in folder.glob("*.incomplete") if folder.is_dir() else ():
            names.add(path.name)
            try:
                sizes.add(path.stat().st_size)
            except FileNotFoundError:
                pass
        return any(0 < s < len(data) for s in sizes) and hub.in_flight == 1

    wait_for(partial_seen, timeout=20, what="a partial .incomplete file")
    worker.join(timeout=30)

    assert result and Path(result[0]).read_bytes() == data
    assert len(names) == 1 and re.fullmatch(pattern + r"\.incomplete", names.pop())
    assert list(folder.glob("*.incomplete")) == []


# -- errors and integrity ----------------------------------------------------------------------


def test_unknown_repo_file_and_revision(hub: FakeHub, small: bytes, tmp_path: Path) -> None:
    hub.add_repo(REPO, {MODEL: small})
    api = HfApi(endpoint=hub.url, token=False)
    cache = tmp_path / "cache"

    with pytest.raises(RepositoryNotFoundError):
        api.model_info("olla-test/missing", files_metadata=True)
    with pytest.raises(RepositoryNotFoundError):
        download(hub.url, repo_id="olla-test/missing", cache_dir=cache)
    with pytest.raises(RemoteEntryNotFoundError) as missing_file:
        download(hub.url, "missing.gguf", cache_dir=cache)
    assert isinstance(missing_file.value, EntryNotFoundError)
    with pytest.raises(RevisionNotFoundError):
        download(hub.url, revision="v9", cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="v9")


def test_corrupt_body_is_not_detected_by_the_download(
    hub: FakeHub, small: bytes, tmp_path: Path
) -> None:
    """hf_hub_download checks the size only: a bad byte lands in the cache under the true sha256."""
    hub.add_repo(REPO, {MODEL: small})
    hub.corrupt = True
    cache = tmp_path / "cache"

    path = download(hub.url, cache_dir=cache)

    assert len(Path(path).read_bytes()) == len(small)
    assert file_sha256(path) != sha256(small)
    assert Path(path).resolve().name == sha256(small)
    report = HfApi(endpoint=hub.url, token=False).verify_repo_checksums(REPO, cache_dir=cache)
    assert [(m["path"], m["expected"]) for m in report.mismatches] == [(MODEL, sha256(small))]


# -- a second call -----------------------------------------------------------------------------


def test_second_call_to_cache_dir(
    hub: FakeHub, small: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = hub.add_repo(REPO, {MODEL: small})
    cache = tmp_path / "cache"
    first = download(hub.url, cache_dir=cache)
    hub.reset_counters()

    assert download(hub.url, cache_dir=cache) == first  # a branch: re-HEADs, does not GET
    assert hub.requests == [("HEAD", f"/{REPO}/resolve/main/{MODEL}", None)]
    hub.reset_counters()
    assert download(hub.url, cache_dir=cache, revision=commit) == first  # a commit: no request
    assert hub.requests == []

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert download(hub.url, cache_dir=cache) == first  # offline: refs/main -> snapshot
    assert hub.requests == []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    url = hub.url
    hub.stop()
    assert download(url, cache_dir=cache) == first  # hub unreachable: same fallback


def test_second_call_to_local_dir(hub: FakeHub, small: bytes, tmp_path: Path) -> None:
    hub.add_repo(REPO, {MODEL: small})
    local = tmp_path / "local"
    first = download(hub.url, local_dir=local)
    hub.reset_counters()

    assert download(hub.url, local_dir=local) == first
    assert hub.requests == [("HEAD", f"/{REPO}/resolve/main/{MODEL}", None)]
    url = hub.url
    hub.stop()
    assert download(url, local_dir=local) == first  # hub unreachable: the local file, a warning


# -- the raw protocol, from asyncio ------------------------------------------------------------


async def test_raw_protocol_from_an_async_client(hub: FakeHub, small: bytes) -> None:
    commit = hub.add_repo(REPO, {MODEL: small})
    digest = sha256(small)
    async with aiohttp.ClientSession() as session:
        resolve = f"{hub.url}/{REPO}/resolve/main/{MODEL}"
        async with session.head(resolve, allow_redirects=False) as head:
            assert head.status == 302
            assert head.headers["X-Repo-Commit"] == commit
            assert head.headers["X-Linked-Etag"] == f'"{digest}"'
            assert head.headers["X-Linked-Size"] == str(len(small))
            assert head.headers["ETag"] == f'"{digest}"'
            assert not any(k.lower().startswith("x-xet") for k in head.headers)
            location = head.headers["Location"]
        assert location.startswith(f"{hub.cdn_url}/cdn/{digest}?")
        async with session.get(location, headers={"Range": "bytes=1000-"}) as part:
            assert part.status == 206
            assert part.headers["Content-Range"] == f"bytes 1000-{len(small) - 1}/{len(small)}"
            assert await part.read() == small[1000:]
        async with session.get(location, headers={"Range": f"bytes={len(small)}-"}) as past:
            assert past.status == 416
            assert past.headers["Content-Range"] == f"bytes */{len(small)}"
        async with session.get(resolve) as whole:  # GET on resolve follows the 302
            assert await whole.read() == small
        async with session.head(f"{hub.url}/{REPO}/resolve/main/nope.bin") as missing:
            assert missing.status == 404
            assert missing.headers["X-Error-Code"] == "EntryNotFound"
            assert missing.headers["X-Repo-Commit"] == commit
        async with session.get(f"{hub.url}/api/models/olla-test/missing") as unknown:
            assert unknown.status == 404 and unknown.headers["X-Error-Code"] == "RepoNotFound"
