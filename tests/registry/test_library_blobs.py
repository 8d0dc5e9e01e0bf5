"""A pull from an Ollama-protocol registry into a store, against the fake registry (no daemon)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from olla.errors import Interrupted, NotFound, NotSupported, UpstreamError
from olla.registry import manifests as mf
from olla.registry.blob_parts import PartSizes
from olla.registry.fetch import Downloads
from olla.registry.library_names import LibraryRef, resolve_pull
from olla.registry.library_pull import LibraryPull
from olla.registry.store import Registry
from tests.fake_ollama_registry import MODEL, PARAMS, PROJECTOR, TEMPLATE, FakeOllamaRegistry
from tests.tiny_projector import write_projector

WEIGHTS = os.urandom(300_000)
SMALL_PARTS = PartSizes(count=16, min_size=40_000, max_size=100_000, at_once=3)


@pytest.fixture
def fake() -> Iterator[FakeOllamaRegistry]:
    with FakeOllamaRegistry(chunk_size=8192) as reg:
        reg.add_model(
            "tiny:1b",
            [(MODEL, WEIGHTS), (TEMPLATE, b"{{ .Prompt }}"), (PARAMS, b'{"stop": ["<|x|>"]}')],
        )
        yield reg


def ref(fake: FakeOllamaRegistry, text: str = "tiny:1b") -> LibraryRef:
    _, source = resolve_pull(text, fake.url, insecure=False)
    assert isinstance(source, LibraryRef)
    return source


def pull(
    fake: FakeOllamaRegistry,
    store: Registry,
    text: str = "tiny:1b",
    sizes: PartSizes = SMALL_PARTS,
    stop: threading.Event | None = None,
) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    LibraryPull(ref(fake, text), sizes=sizes).run(
        store, lines.append, stop or threading.Event(), Downloads()
    )
    return lines


def test_a_large_blob_comes_in_parts_several_at_once_and_is_whole(
    fake: FakeOllamaRegistry, tmp_path: Path
) -> None:
    store = Registry(tmp_path)
    lines = pull(fake, store)
    assert lines[0] == {"status": "pulling manifest"} and lines[-1] == {"status": "success"}
    digest = fake.digest("tiny:1b", MODEL)
    assert store.blobs.path(digest).read_bytes() == WEIGHTS
    ranges = [r[3] for r in fake.requests if r[0] == "cdn" and r[2].endswith(digest)]
    assert len(ranges) == len(SMALL_PARTS.split(len(WEIGHTS))) > 1, ranges
    assert "bytes=0-" + str(SMALL_PARTS.split(len(WEIGHTS))[0][1] - 1) in ranges
    entry = store.entry(ref(fake).name)
    assert [layer.media_type for layer in entry.manifest.layers] == [
        mf.MEDIA_TYPE_MODEL,
        mf.MEDIA_TYPE_TEMPLATE,
        mf.MEDIA_TYPE_PARAMS,
    ]
    resolved = store.resolve(entry.name)
    assert resolved.template == "{{ .Prompt }}" and resolved.parameters == {"stop": ["<|x|>"]}
    assert resolved.config.model_family == "llama"  # the registry's config blob, kept
    assert not any((tmp_path / "partial").iterdir())  # neither data nor part state is left


def test_a_cut_part_goes_on_from_where_it_broke(fake: FakeOllamaRegistry, tmp_path: Path) -> None:
    fake.drop_after = 10_000
    store = Registry(tmp_path)
    assert pull(fake, store, sizes=PartSizes())[-1] == {"status": "success"}
    digest = fake.digest("tiny:1b", MODEL)
    ranges = [r[3] for r in fake.requests if r[0] == "cdn" and r[2].endswith(digest)]
    assert ranges[0] == f"bytes=0-{len(WEIGHTS) - 1}"
    assert ranges[1].startswith("bytes=") and int(ranges[1][6:].split("-")[0]) >= 10_000
    assert store.blobs.path(digest).read_bytes() == WEIGHTS


def test_a_stopped_parted_pull_keeps_its_parts_and_the_next_fetches_only_the_rest(
    fake: FakeOllamaRegistry, tmp_path: Path
) -> None:
    store = Registry(tmp_path)
    stop = threading.Event()
    digest = fake.digest("tiny:1b", MODEL)
    fake.delay_per_chunk = 0.01
    seen: list[dict[str, Any]] = []

    def report(line: dict[str, Any]) -> None:
        seen.append(line)
        if line.get("digest") == digest and line.get("completed", 0) > 100_000:
            stop.set()

    with pytest.raises(Interrupted):
        LibraryPull(ref(fake), sizes=SMALL_PARTS).run(store, report, stop, Downloads())
    assert not store.exists(ref(fake).name)
    part = tmp_path / "partial" / f"sha256-{digest.removeprefix('sha256:')}.part"
    assert part.exists() and part.with_name(part.name + ".json").exists()
    # what the stopped pull kept, as its state says (bytes the server sent that were still in
    # flight when it stopped are not kept: counting those made this test depend on the load)
    kept = sum(json.loads(part.with_name(part.name + ".json").read_text())["done"])
    assert 0 < kept < len(WEIGHTS)
    fake.delay_per_chunk = 0.0
    fake.reset_counters()
    pull(fake, store)
    assert store.blobs.path(digest).read_bytes() == WEIGHTS
    assert fake.bytes_served_by_digest[digest] == len(WEIGHTS) - kept


def test_a_file_one_stream_left_is_resumed_in_parts(
    fake: FakeOllamaRegistry, tmp_path: Path
) -> None:
    digest = fake.digest("tiny:1b", MODEL)
    part = tmp_path / "partial" / f"sha256-{digest.removeprefix('sha256:')}.part"
    part.parent.mkdir()
    part.write_bytes(WEIGHTS[:123_456])  # as a one-stream pull (or Hugging Face's) leaves it
    store = Registry(tmp_path)
    pull(fake, store)
    assert store.blobs.path(digest).read_bytes() == WEIGHTS
    assert fake.bytes_served_by_digest[digest] == len(WEIGHTS) - 123_456


def test_parts_the_state_does_not_describe_start_again(
    fake: FakeOllamaRegistry, tmp_path: Path
) -> None:
    digest = fake.digest("tiny:1b", MODEL)
    part = tmp_path / "partial" / f"sha256-{digest.removeprefix('sha256:')}.part"
    part.parent.mkdir()
    part.write_bytes(b"\0" * 200_000)  # holes a parted pull left, under other part sizes
    part.with_name(part.name + ".json").write_text('{"total": 300000, "parts": [], "done": []}')
    store = Registry(tmp_path)
    pull(fake, store)
    assert store.blobs.path(digest).read_bytes() == WEIGHTS
    assert fake.bytes_served_by_digest[digest] == len(WEIGHTS)


def test_a_corrupt_blob_is_refused_and_nothing_is_visible(
    fake: FakeOllamaRegistry, tmp_path: Path
) -> None:
    fake.corrupt = True
    store = Registry(tmp_path)
    with pytest.raises(UpstreamError, match="does not match its sha256"):
        pull(fake, store)
    assert store.list_models() == []
    assert not store.blobs.exists(fake.digest("tiny:1b", MODEL))
    assert not list((tmp_path / "partial").glob("*.part*"))  # nothing bad kept to resume from


def test_an_unknown_tag_is_a_404_naming_it(fake: FakeOllamaRegistry, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="file does not exist.*tiny:7b") as caught:
        pull(fake, Registry(tmp_path), "tiny:7b")
    assert caught.value.status == 404


def test_a_media_type_olla_cannot_use_is_refused_before_a_byte(
    fake: FakeOllamaRegistry, tmp_path: Path
) -> None:
    draft = "application/vnd.ollama.image.draft"
    fake.add_model("seer:latest", [(MODEL, WEIGHTS), (draft, b"draft" * 100)])
    with pytest.raises(NotSupported, match=f"seer:latest.*{draft}"):
        pull(fake, Registry(tmp_path), "seer")
    assert fake.bytes_served == 0 and not (tmp_path / "blobs").exists()


def test_a_projector_layer_comes_along(fake: FakeOllamaRegistry, tmp_path: Path) -> None:
    projector = write_projector(tmp_path / "mmproj.gguf")
    fake.add_model("seer:latest", [(MODEL, WEIGHTS), (PROJECTOR, projector)])
    store = Registry(tmp_path / "models")
    pull(fake, store, "seer")
    model = store.resolve(ref(fake, "seer").name)
    assert [layer.media_type for layer in model.entry.manifest.layers] == [MODEL, PROJECTOR]
    assert model.projector_path is not None
    assert model.projector_path.read_bytes() == projector.read_bytes()


def test_a_registry_that_is_down_is_a_502(tmp_path: Path) -> None:
    with FakeOllamaRegistry() as gone:
        url = gone.url
    _, source = resolve_pull("tiny", url, insecure=False)
    assert isinstance(source, LibraryRef)
    with pytest.raises(UpstreamError, match="cannot reach the registry"):
        LibraryPull(source).run(Registry(tmp_path), lambda _: None, threading.Event(), Downloads())


def test_blobs_are_cut_as_ollama_cuts_them() -> None:
    sizes, mb = PartSizes(), 1000 * 1000
    assert sizes.split(150 * mb) == [(0, 150 * mb)]  # under two parts: one stream
    four_gb = sizes.split(4000 * mb)
    assert len(four_gb) == 16 and {size for _, size in four_gb} == {250 * mb}
    assert [size for _, size in sizes.split(250 * mb)] == [100 * mb, 100 * mb, 50 * mb]
    assert {size for _, size in sizes.split(40_000 * mb)} == {1000 * mb}  # at most 1 GB a part


def test_the_fake_serves_what_it_announces(fake: FakeOllamaRegistry) -> None:
    digest = fake.digest("tiny:1b", MODEL)
    assert digest == "sha256:" + hashlib.sha256(WEIGHTS).hexdigest()
