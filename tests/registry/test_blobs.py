"""Tests for olla.registry.blobs: digests, atomic commits, crash safety, storage errors."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from olla.errors import BlobNotFound, InvalidDigest, StorageError
from olla.registry.blobs import BlobStore, Sink, digest_filename, parse_digest

REPO_ROOT = Path(__file__).resolve().parents[2]
HEX = "ab" * 32


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def listing(root: Path) -> list[str]:
    return sorted(os.listdir(root)) if root.exists() else []


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "models" / "blobs")


# --- digests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"sha256:{HEX}", f"sha256:{HEX}"),
        (f"sha256-{HEX}", f"sha256:{HEX}"),
        (f"sha256:{HEX.upper()}", f"sha256:{HEX}"),
        (f"sha256-{'0' * 64}", f"sha256:{'0' * 64}"),
    ],
)
def test_parse_digest_valid(text: str, expected: str) -> None:
    assert parse_digest(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        HEX,  # no algorithm
        f"sha512:{HEX}",  # wrong algorithm
        f"SHA256:{HEX}",  # algorithm is lowercase only
        f"md5:{HEX}",
        f"sha256:{HEX[:-1]}",  # short
        f"sha256:{HEX}a",  # long
        f"sha256:{'g' * 64}",  # not hex
        f"sha256_{HEX}",  # wrong separator
        f"sha256::{HEX}",
        f" sha256:{HEX}",
        f"sha256:{HEX}\n",  # "$" in a regex would let this through
        f"sha256:{HEX}\x00",
        f"sha256:\x00{HEX[1:]}",
        "sha256:../../etc/passwd",
        f"sha256:../{HEX[3:]}",
        f"sha256-{HEX}/../../x",
        f"../sha256-{HEX}",
    ],
)
def test_parse_digest_invalid(text: str) -> None:
    with pytest.raises(InvalidDigest, match="expected 'sha256:' followed by 64 hex digits") as ei:
        parse_digest(text)
    assert ei.value.status == 400


def test_digest_filename_and_path_stay_in_root(store: BlobStore) -> None:
    assert digest_filename(f"sha256:{HEX.upper()}") == f"sha256-{HEX}"
    assert store.path(f"sha256:{HEX}") == store.root / f"sha256-{HEX}"
    with pytest.raises(InvalidDigest):
        store.path("sha256:../../etc")


# --- round trips -------------------------------------------------------------------------------


def test_put_bytes_round_trip(store: BlobStore) -> None:
    data = b"hello, blobs"
    digest = store.put_bytes(data)
    assert digest == sha(data)
    assert store.exists(digest)
    assert store.size(digest) == len(data)
    assert store.path(digest).read_bytes() == data
    with store.open(digest) as f:
        assert f.read() == data
    assert store.digests() == [digest]
    assert store.verify(digest)


def test_put_bytes_accepts_any_digest_spelling(store: BlobStore) -> None:
    data = b"spelling"
    dashed_upper = "sha256-" + hashlib.sha256(data).hexdigest().upper()
    digest = store.put_bytes(data, expected_digest=dashed_upper)
    assert digest == sha(data)


def test_put_empty_blob(store: BlobStore) -> None:
    digest = store.put_bytes(b"")
    assert digest == sha(b"")
    assert store.size(digest) == 0


def test_put_file_streams_several_chunks(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(2 * (1 << 20) + 123)  # more than two 1 MiB chunks
    src = tmp_path / "model.gguf"
    src.write_bytes(data)
    digest = store.put_file(src, expected_digest=sha(data))
    assert digest == sha(data)
    assert store.path(digest).read_bytes() == data
    assert listing(store.root) == [digest_filename(digest)]


def test_writer_round_trip(store: BlobStore) -> None:
    with store.writer() as w:
        for part in (b"a" * 10, b"b" * 20, b"c"):
            w.write(part)
        assert w.size == 31
        digest = w.commit()
        assert w.commit() == digest  # committing twice is harmless
    assert digest == sha(b"a" * 10 + b"b" * 20 + b"c")
    assert store.exists(digest)
    assert listing(store.root) == [digest_filename(digest)]


def test_identical_content_is_stored_once(store: BlobStore) -> None:
    first = store.put_bytes(b"same bytes")
    second = store.put_bytes(b"same bytes")
    with store.writer() as w:
        w.write(b"same bytes")
        third = w.commit()
    assert first == second == third
    assert listing(store.root) == [digest_filename(first)]


def test_commit_heals_a_truncated_blob(store: BlobStore) -> None:
    digest = store.put_bytes(b"full content")
    store.path(digest).write_bytes(b"full")  # damage done outside olla
    assert not store.verify(digest)
    assert store.put_bytes(b"full content") == digest
    assert store.verify(digest)


def test_digest_mismatch_leaves_nothing(store: BlobStore) -> None:
    wrong = f"sha256:{HEX}"
    with pytest.raises(InvalidDigest, match=f"digest mismatch: expected {wrong}, got sha256:"):
        store.put_bytes(b"payload", expected_digest=wrong)
    with store.writer(expected_digest=wrong) as w:
        w.write(b"payload")
        with pytest.raises(InvalidDigest, match="digest mismatch"):
            w.commit()
    assert store.digests() == []
    assert not store.exists(wrong)
    assert not store.exists(sha(b"payload"))
    assert listing(store.root) == []  # no temp file either


def test_writer_rejects_bad_expected_digest_before_creating_anything(store: BlobStore) -> None:
    with pytest.raises(InvalidDigest):
        store.writer(expected_digest="sha256:nope")
    assert listing(store.root) == []


def test_exception_inside_with_aborts(store: BlobStore) -> None:
    with pytest.raises(RuntimeError), store.writer() as w:
        w.write(b"partial")
        raise RuntimeError("client went away")
    assert listing(store.root) == []
    w.abort()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        w.write(b"more")


def test_leaving_with_without_commit_aborts(store: BlobStore) -> None:
    with store.writer() as w:
        w.write(b"never committed")
    assert listing(store.root) == []
    assert store.digests() == []


# --- crash safety ------------------------------------------------------------------------------


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from olla.registry.blobs import BlobStore

    root = Path(sys.argv[1])
    w = BlobStore(root).writer()
    w.write(b"x" * (3 << 20))  # larger than any buffer: it reaches the OS
    for name in os.listdir(root):
        fd = os.open(root / name, os.O_RDONLY)
        os.fsync(fd)
    os._exit(1)  # crash: no commit, no abort, no __exit__
    """
)


def test_crash_between_write_and_rename_leaves_no_visible_blob(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(root)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr.decode()
    leftovers = listing(root)
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-")
    assert (root / leftovers[0]).stat().st_size == 3 << 20  # the data did reach the disk

    store = BlobStore(root)
    digest = sha(b"x" * (3 << 20))
    assert store.digests() == []
    assert not store.exists(digest)
    with pytest.raises(BlobNotFound):
        store.size(digest)
    assert store.remove_stale_temp(older_than_s=3600) == 0  # too fresh to be called stale
    assert store.remove_stale_temp(older_than_s=0) == 1
    assert listing(root) == []
    assert store.put_bytes(b"x" * (3 << 20)) == digest  # and the store still works


# --- verify, delete, missing blobs -------------------------------------------------------------


def test_verify_detects_corruption(store: BlobStore) -> None:
    digest = store.put_bytes(b"original content")
    store.path(digest).write_bytes(b"0riginal content")  # same size, one byte flipped
    assert not store.verify(digest)


def test_delete(store: BlobStore) -> None:
    digest = store.put_bytes(b"to delete")
    assert store.delete(digest)
    assert not store.exists(digest)
    assert not store.delete(digest)
    assert store.digests() == []


def test_missing_blob_errors(store: BlobStore) -> None:
    missing = f"sha256:{HEX}"
    assert not store.exists(missing)
    for call in (store.size, store.open, store.verify):
        with pytest.raises(BlobNotFound, match=missing) as ei:
            call(missing)
        assert ei.value.status == 404
    assert store.digests() == []  # the root does not even exist yet
    assert store.remove_stale_temp(0) == 0


def test_digests_ignores_temp_and_stray_files(store: BlobStore) -> None:
    digest = store.put_bytes(b"visible")
    (store.root / ".tmp-abc").write_bytes(b"partial")
    (store.root / f"sha256-{HEX.upper()}").write_bytes(b"wrong case")
    (store.root / f"sha256-{HEX}.partial").write_bytes(b"x")
    (store.root / "notes.txt").write_text("x")
    (store.root / f"sha256-{'cd' * 32}").mkdir()
    assert store.digests() == [digest]


def test_remove_stale_temp_spares_fresh_files_and_blobs(store: BlobStore) -> None:
    digest = store.put_bytes(b"keep me")
    old = store.root / ".tmp-old"
    old.write_bytes(b"old")
    os.utime(old, (0, 0))
    (store.root / ".tmp-new").write_bytes(b"new")
    assert store.remove_stale_temp(older_than_s=60) == 1
    assert listing(store.root) == sorted([".tmp-new", digest_filename(digest)])


# --- storage errors (through the opener seam) --------------------------------------------------


class FailingFile:
    """A real temp file whose write or flush fails with `err`, as a full disk would."""

    def __init__(self, path: Path, err: int, fail_on: str) -> None:
        self._f = open(path, "xb")  # closed by the writer
        self._err = err
        self._fail_on = fail_on

    def write(self, data: bytes, /) -> int:
        if self._fail_on == "write":
            raise OSError(self._err, os.strerror(self._err))
        return self._f.write(data)

    def flush(self) -> None:
        if self._fail_on == "flush":
            raise OSError(self._err, os.strerror(self._err))
        self._f.flush()

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self) -> None:
        self._f.close()


def failing_store(root: Path, err: int, fail_on: str) -> BlobStore:
    def opener(path: Path) -> Sink:
        if fail_on == "open":
            raise OSError(err, os.strerror(err), str(path))
        return FailingFile(path, err, fail_on)

    return BlobStore(root, opener=opener)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT])
@pytest.mark.parametrize("fail_on", ["write", "flush"])
def test_disk_full_maps_to_storage_error_and_removes_temp(
    tmp_path: Path, err: int, fail_on: str
) -> None:
    root = tmp_path / "blobs"
    store = failing_store(root, err, fail_on)
    with pytest.raises(StorageError) as ei:
        store.put_bytes(b"does not fit")
    assert ei.value.status == 507
    assert str(ei.value) == f"disk full while writing blob to {root}: free space and retry"
    assert listing(root) == []
    assert store.digests() == []


@pytest.mark.parametrize(("err", "words"), [(errno.EROFS, "read-only"), (errno.EACCES, "denied")])
def test_read_only_maps_to_storage_error_naming_the_path(
    tmp_path: Path, err: int, words: str
) -> None:
    root = tmp_path / "blobs"
    store = failing_store(root, err, "open")
    with pytest.raises(StorageError, match=words) as ei:
        store.put_bytes(b"cannot write")
    assert str(root) in str(ei.value)
    assert listing(root) == []


def test_other_os_errors_propagate_and_remove_temp(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = failing_store(root, errno.EIO, "write")
    with pytest.raises(OSError) as ei:
        store.put_file(Path(__file__))
    assert ei.value.errno == errno.EIO
    assert listing(root) == []


# --- room on the disk (through the disk_free seam) ---------------------------------------------


def test_check_room_refuses_a_blob_larger_than_the_free_space(tmp_path: Path) -> None:
    measured: list[Path] = []

    def disk_free(path: Path) -> int:
        measured.append(path)
        return 5 * 10**9

    store = BlobStore(tmp_path / "models" / "blobs", disk_free=disk_free)
    store.check_room(5 * 10**9)
    with pytest.raises(StorageError) as caught:
        store.check_room(5 * 10**9 + 1)
    assert caught.value.status == 507
    assert str(caught.value).startswith(
        "not enough disk space for a blob of 5.0 GB: 5.0 GB is free on "
    )
    assert "set OLLA_MODELS to a larger disk" in str(caught.value)
    # the store is made on the first write; until then its nearest existing parent is measured
    assert measured == [tmp_path, tmp_path] and not store.root.exists()
