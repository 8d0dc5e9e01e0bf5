"""Pulls from an Ollama-protocol registry end to end: a real daemon with OLLA_REGISTRY at a fake
registry on loopback (its blobs behind a redirect to a second port), the real SmolLM2 GGUF."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from olla.cli import cli
from tests.conftest import Daemon, make_daemon, until
from tests.fake_ollama_registry import (
    LICENSE,
    MODEL,
    PARAMS,
    PROJECTOR,
    TEMPLATE,
    FakeOllamaRegistry,
)
from tests.tiny_projector import write_projector

TENSOR = "application/vnd.ollama.image.tensor"  # Ollama's MLX engine's: olla cannot load them

NAME = "smollm2:135m"
STORED = "registry.ollama.ai/library/smollm2/135m"
CHATML = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)
PARAMETERS = {"stop": ["<|im_end|>"], "temperature": 0.25}


@pytest.fixture
def fake(smollm2_gguf: Path) -> Iterator[FakeOllamaRegistry]:
    with FakeOllamaRegistry() as reg:
        reg.add_model(
            NAME,
            [
                (MODEL, smollm2_gguf),
                (TEMPLATE, CHATML.encode()),
                (PARAMS, json.dumps(PARAMETERS).encode()),
                (LICENSE, b"Apache License 2.0\n"),
            ],
        )
        yield reg


@pytest.fixture
def daemon_on_registry(tmp_path: Path, fake: FakeOllamaRegistry) -> Iterator[Daemon]:
    d = make_daemon(tmp_path)
    d.env["OLLA_REGISTRY"] = fake.url
    d.start()
    yield d
    d.stop()


async def pull(d: Daemon, name: str, stream: bool = True) -> tuple[int, list[dict[str, Any]]]:
    async with aiohttp.ClientSession(base_url=d.base_url) as s:
        async with s.post("/api/pull", json={"model": name, "stream": stream}) as r:
            if not stream:
                return r.status, [await r.json()]
            return r.status, [json.loads(line) async for line in r.content if line.strip()]


async def post(d: Daemon, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession(base_url=d.base_url) as s:
        async with s.post(path, json=body) as r:
            assert r.status == 200, await r.text()
            reply: dict[str, Any] = await r.json()
            return reply


def stored(d: Daemon) -> list[Path]:
    root = d.models / "manifests"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def part_of(d: Daemon, digest: str) -> Path:
    return d.models / "partial" / f"sha256-{digest.removeprefix('sha256:')}.part"


async def test_olla_pull_fetches_through_the_redirect_and_the_model_runs(
    daemon_on_registry: Daemon, fake: FakeOllamaRegistry, smollm2_gguf: Path
) -> None:
    out = await asyncio.to_thread(
        CliRunner().invoke, cli, ["pull", NAME], env=daemon_on_registry.env
    )
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[-1] == "success"
    digest = fake.digest(NAME, MODEL)
    asked = fake.requests
    assert ("registry", "GET", "/v2/library/smollm2/manifests/135m", None) in asked
    assert ("registry", "GET", f"/v2/library/smollm2/blobs/{digest}", None) in asked
    assert [r for r in asked if r[0] == "cdn" and r[2] == f"/blobs/{digest}"]  # redirected
    blob = daemon_on_registry.models / "blobs" / digest.replace(":", "-")
    assert blob.stat().st_size == smollm2_gguf.stat().st_size
    assert [
        p.relative_to(daemon_on_registry.models / "manifests") for p in stored(daemon_on_registry)
    ] == [Path(STORED)]
    reply = await post(
        daemon_on_registry,
        "/api/generate",
        {"model": NAME, "prompt": "Hi", "stream": False, "options": {"num_predict": 4}},
    )
    assert reply["done"] and reply["eval_count"] > 0
    show = await post(daemon_on_registry, "/api/show", {"model": NAME})
    assert show["template"] == CHATML
    shown = [line.split(None, 1) for line in show["parameters"].splitlines()]
    assert shown == [["stop", '"<|im_end|>"'], ["temperature", "0.25"]]
    assert "Apache License 2.0" in show["license"]


async def test_the_ollama_client_pulls_and_a_second_pull_downloads_nothing(
    daemon_on_registry: Daemon, fake: FakeOllamaRegistry
) -> None:
    import ollama

    client = ollama.Client(host=daemon_on_registry.base_url)
    statuses = [part.status for part in client.pull(NAME, stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success", statuses
    assert "verifying sha256 digest" in statuses and "writing manifest" in statuses
    served = fake.bytes_served
    assert served > 0
    assert client.pull(NAME).status == "success"
    assert fake.bytes_served == served  # every blob was there
    assert [m.model for m in client.list().models] == [NAME]


async def test_two_pulls_at_once_share_one_download(
    daemon_on_registry: Daemon, fake: FakeOllamaRegistry, smollm2_gguf: Path
) -> None:
    fake.delay_per_chunk = 0.001  # about 1.5 s for the blob: long enough to overlap
    (_, first), (_, second) = await asyncio.gather(
        pull(daemon_on_registry, NAME), pull(daemon_on_registry, NAME)
    )
    assert first[-1] == second[-1] == {"status": "success"}, (first[-3:], second[-3:])
    assert fake.bytes_served < 1.2 * smollm2_gguf.stat().st_size


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
async def test_a_full_disk_is_a_507_and_the_store_is_unchanged(
    daemon_on_registry: Daemon, fake: FakeOllamaRegistry
) -> None:
    part = part_of(daemon_on_registry, fake.digest(NAME, MODEL))
    part.parent.mkdir(parents=True)
    part.symlink_to("/dev/full")  # every write fails with ENOSPC: the kernel's own full disk
    status, [reply] = await pull(daemon_on_registry, NAME, stream=False)
    assert status == 507 and "disk is full" in reply["error"], reply
    assert stored(daemon_on_registry) == []
    part.unlink()
    status, lines = await pull(daemon_on_registry, NAME)
    assert lines[-1] == {"status": "success"}, lines[-3:]


async def test_a_connection_cut_mid_blob_resumes_with_a_range(
    daemon_on_registry: Daemon, fake: FakeOllamaRegistry, smollm2_gguf: Path
) -> None:
    size = smollm2_gguf.stat().st_size
    fake.drop_after = size // 2
    status, lines = await pull(daemon_on_registry, NAME)
    assert lines[-1] == {"status": "success"}, lines[-3:]
    digest = fake.digest(NAME, MODEL)
    ranges = [r[3] for r in fake.requests if r[0] == "cdn" and r[2] == f"/blobs/{digest}"]
    assert len(ranges) == 2 and int(ranges[1].split("=")[1].split("-")[0]) >= size // 2, ranges
    assert fake.bytes_served_by_digest[digest] < 1.1 * size  # not the whole blob twice


async def test_a_corrupt_blob_is_refused_with_nothing_in_the_store(
    daemon_on_registry: Daemon, fake: FakeOllamaRegistry
) -> None:
    fake.corrupt = True
    status, [reply] = await pull(daemon_on_registry, NAME, stream=False)
    assert status == 502 and "does not match its sha256" in reply["error"], reply
    assert stored(daemon_on_registry) == []
    digest = fake.digest(NAME, MODEL)
    assert not (daemon_on_registry.models / "blobs" / digest.replace(":", "-")).exists()
    assert not part_of(daemon_on_registry, digest).exists()  # nothing bad to resume from
    fake.corrupt = False
    status, lines = await pull(daemon_on_registry, NAME)
    assert lines[-1] == {"status": "success"}, lines[-3:]


async def test_an_unknown_tag_or_model_is_a_404_naming_it(daemon_on_registry: Daemon) -> None:
    status, [reply] = await pull(daemon_on_registry, "smollm2:9000b", stream=False)
    assert status == 404, reply
    assert "pull model manifest: file does not exist" in reply["error"]
    assert "smollm2:9000b" in reply["error"]
    status, [reply] = await pull(daemon_on_registry, "someone/nothing", stream=False)
    assert status == 404 and "someone/nothing:latest" in reply["error"], reply


async def test_a_layer_olla_cannot_use_is_refused_before_a_byte(
    daemon_on_registry: Daemon, fake: FakeOllamaRegistry, smollm2_gguf: Path
) -> None:
    fake.add_model("mlx:7b", [(MODEL, smollm2_gguf), (TENSOR, b"safetensors" * 1000)])
    status, [reply] = await pull(daemon_on_registry, "mlx:7b", stream=False)
    assert status == 501 and TENSOR in reply["error"] and "mlx:7b" in reply["error"], reply
    assert fake.bytes_served == 0 and stored(daemon_on_registry) == []


async def test_a_vision_model_comes_with_its_projector(
    daemon_on_registry: Daemon, fake: FakeOllamaRegistry, smollm2_gguf: Path, tmp_path: Path
) -> None:
    projector = write_projector(tmp_path / "mmproj.gguf")
    fake.add_model("smolvlm:256m", [(MODEL, smollm2_gguf), (PROJECTOR, projector)])
    status, lines = await pull(daemon_on_registry, "smolvlm:256m")
    assert status == 200 and lines[-1]["status"] == "success", lines
    digest = fake.digest("smolvlm:256m", PROJECTOR).removeprefix("sha256:")
    blob = daemon_on_registry.models / "blobs" / f"sha256-{digest}"
    assert blob.read_bytes() == projector.read_bytes()
    show = await post(daemon_on_registry, "/api/show", {"model": "smolvlm:256m"})
    assert show["projector_info"]["general.architecture"] == "clip"
    assert show["capabilities"][:2] == ["completion", "vision"]


async def test_a_name_with_its_own_host_goes_there(
    daemon_on_registry: Daemon, fake: FakeOllamaRegistry
) -> None:
    fake.add_model("team/helper:v1", [(MODEL, b"GGUF" * 8)])
    name = f"{fake.host}/team/helper:v1"
    status, [reply] = await pull(daemon_on_registry, name, stream=False)
    # a loopback host without a scheme is https first, as in Ollama: insecure allows http
    assert status == 502 and "cannot reach the registry at https://" in reply["error"], reply
    out = await asyncio.to_thread(
        CliRunner().invoke, cli, ["pull", "--insecure", name], env=daemon_on_registry.env
    )
    assert out.exit_code == 0 and out.output.splitlines()[-1] == "success", out.output
    assert (daemon_on_registry.models / "manifests" / fake.host / "team/helper/v1").is_file()


async def test_ctrl_c_stops_the_pull_and_the_next_one_goes_on(
    daemon_on_registry: Daemon, fake: FakeOllamaRegistry, smollm2_gguf: Path
) -> None:
    size = smollm2_gguf.stat().st_size
    fake.delay_per_chunk = 0.01  # about 15 s for the whole blob: time to press Ctrl-C
    # the child takes Python's own SIGINT handler, as under a terminal (see test_pull.py)
    interruptible = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from olla.cli import main; main()"
    )
    cli_pull = subprocess.Popen(
        [sys.executable, "-c", interruptible, "pull", NAME],
        env=daemon_on_registry.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    digest = fake.digest(NAME, MODEL)
    part = part_of(daemon_on_registry, digest)
    await until(lambda: part.exists() and part.stat().st_size > 0, 30, "download under way")
    cli_pull.send_signal(signal.SIGINT)
    _, stderr = await asyncio.to_thread(cli_pull.communicate, timeout=30)
    assert cli_pull.returncode == 130 and "goes on from what was downloaded" in stderr, stderr
    await until(lambda: "pull stopped" in daemon_on_registry.log(), 30, "the daemon stops it")
    kept = part.stat().st_size
    assert 0 < kept < size and stored(daemon_on_registry) == []
    fake.delay_per_chunk = 0
    fake.reset_counters()
    status, lines = await pull(daemon_on_registry, NAME)
    assert lines[-1] == {"status": "success"}, lines[-3:]
    [first] = [r[3] for r in fake.requests if r[0] == "cdn" and r[2] == f"/blobs/{digest}"]
    assert first == f"bytes={kept}-{size - 1}"
    assert fake.bytes_served_by_digest[digest] == size - kept  # only the rest
