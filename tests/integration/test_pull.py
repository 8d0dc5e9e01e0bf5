"""`olla pull` end to end: a real daemon, real huggingface-hub, a fake Hugging Face on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from olla.cli import cli
from olla.errors import StorageError
from olla.registry.catalog import resolve_hub as resolve
from olla.registry.pull import run_pull
from olla.registry.pull_plan import plan_pull
from olla.registry.store import Registry
from tests.conftest import Daemon, make_daemon, until
from tests.fake_hf import FakeHub
from tests.tiny_projector import write_projector

REPO = "bartowski/SmolLM2-135M-Instruct-GGUF"
GGUF = "SmolLM2-135M-Instruct-Q4_K_M.gguf"
NAME = f"hf.co/{REPO}"


@pytest.fixture
def hub(smollm2_gguf: Path) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_repo(
            REPO,
            {
                GGUF: smollm2_gguf,
                "SmolLM2-135M-Instruct-Q8_0.gguf": b"GGUF" * 64,
                "README.md": b"# SmolLM2\n",
            },
        )
        yield fake


@pytest.fixture
def daemon_on_hub(tmp_path: Path, hub: FakeHub) -> Iterator[Daemon]:
    d = make_daemon(tmp_path)
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        d.env.pop(key, None)
    d.env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf_home"))
    d.start()
    yield d
    d.stop()


async def pull(d: Daemon, name: str, stream: bool = True) -> tuple[int, list[dict[str, Any]]]:
    async with aiohttp.ClientSession(base_url=d.base_url) as s:
        async with s.post("/api/pull", json={"model": name, "stream": stream}) as r:
            if not stream:
                return r.status, [await r.json()]
            return r.status, [json.loads(line) async for line in r.content if line.strip()]


def manifests(d: Daemon) -> list[Path]:
    root = d.models / "manifests"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_a_pulled_model_answers_and_a_second_pull_downloads_nothing(
    daemon_on_hub: Daemon, hub: FakeHub, smollm2_gguf: Path
) -> None:
    status, lines = await pull(daemon_on_hub, NAME)
    assert status == 200, lines
    statuses = [line["status"] for line in lines]
    sha = hub.file(REPO, GGUF).sha256
    assert statuses[0] == "pulling manifest" and statuses[-3:] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    progress = [line for line in lines if line["status"] == f"pulling {sha[:12]}"]
    assert progress[-1]["digest"] == f"sha256:{sha}"
    assert progress[-1]["completed"] == progress[-1]["total"] == smollm2_gguf.stat().st_size
    assert (daemon_on_hub.models / "blobs" / f"sha256-{sha}").stat().st_size == progress[-1][
        "total"
    ]
    assert not (daemon_on_hub.models / "partial").exists() or not any(
        (daemon_on_hub.models / "partial").rglob("*.gguf")
    )
    question = [{"role": "user", "content": "What is the capital of France?"}]
    body = {
        "model": NAME,
        "messages": question,
        "stream": False,
        "options": {"temperature": 0, "num_predict": 40},
    }
    async with aiohttp.ClientSession(base_url=daemon_on_hub.base_url) as s:
        async with s.post("/api/chat", json=body) as r:
            assert r.status == 200, await r.text()
            reply = await r.json()
    # the pulled model loads and answers (that it is the GGUF, byte for byte, is checked above)
    assert reply["message"]["content"].strip() and reply["eval_count"] > 0
    served = hub.bytes_served
    out = await asyncio.to_thread(CliRunner().invoke, cli, ["pull", NAME], env=daemon_on_hub.env)
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[-1] == "success" and "done" in out.output
    assert hub.bytes_served == served  # the blob was there: nothing downloaded again


async def test_a_corrupted_download_is_rejected_and_the_store_is_unchanged(
    daemon_on_hub: Daemon, hub: FakeHub
) -> None:
    hub.corrupt = True
    status, [reply] = await pull(daemon_on_hub, NAME, stream=False)
    assert status == 502 and "does not match the sha256" in reply["error"], reply
    assert manifests(daemon_on_hub) == []
    sha = hub.file(REPO, GGUF).sha256
    assert not (daemon_on_hub.models / "blobs" / f"sha256-{sha}").exists()
    hub.corrupt = False  # a clean pull afterwards works: nothing bad was kept to resume from
    status, lines = await pull(daemon_on_hub, NAME)
    assert lines[-1] == {"status": "success"}


async def test_unknown_files_and_repos_are_404s_that_say_what_exists(
    daemon_on_hub: Daemon,
) -> None:
    status, [reply] = await pull(daemon_on_hub, f"{NAME}:IQ2_XS", stream=False)
    assert status == 404 and GGUF in reply["error"] and "Q8_0" in reply["error"], reply
    status, [reply] = await pull(daemon_on_hub, "hf.co/nobody/nothing-GGUF", stream=False)
    assert status == 404 and "no such repository" in reply["error"], reply


async def test_two_pulls_at_once_share_one_download(
    daemon_on_hub: Daemon, hub: FakeHub, smollm2_gguf: Path
) -> None:
    hub.delay_per_chunk = 0.0005  # about 0.8 s for the file: long enough to overlap
    (s1, first), (s2, second) = await asyncio.gather(
        pull(daemon_on_hub, NAME), pull(daemon_on_hub, NAME)
    )
    assert first[-1] == second[-1] == {"status": "success"}, (first[-3:], second[-3:])
    served = hub.bytes_served_by_file
    assert sum(served.values()) < 1.2 * smollm2_gguf.stat().st_size, served


async def test_a_dropped_connection_resumes_instead_of_starting_over(
    daemon_on_hub: Daemon, hub: FakeHub, smollm2_gguf: Path
) -> None:
    size = smollm2_gguf.stat().st_size
    hub.drop_after = size // 2
    status, lines = await pull(daemon_on_hub, NAME)
    assert lines[-1] == {"status": "success"}, lines[-3:]
    ranged = [r for r in hub.requests if r[2] and not r[2].startswith("bytes=0-")]
    assert ranged, hub.requests  # the second request asked for the rest
    assert hub.bytes_served < 1.25 * size  # not the whole file twice


def test_push_is_not_supported() -> None:
    out = CliRunner().invoke(cli, ["push", "smollm2:135m"])
    assert out.exit_code == 1 and "does not push" in out.output


async def test_no_network_says_so(daemon_on_hub: Daemon, hub: FakeHub) -> None:
    hub.stop()  # nothing listens at HF_ENDPOINT any more
    status, [reply] = await pull(daemon_on_hub, NAME, stream=False)
    assert status == 502 and "cannot reach Hugging Face" in reply["error"], reply
    assert "check the network" in reply["error"]


async def test_an_interrupted_pull_goes_on_from_where_it_stopped(
    daemon_on_hub: Daemon, hub: FakeHub, smollm2_gguf: Path
) -> None:
    size = smollm2_gguf.stat().st_size
    hub.queue_drops(size // 2, 0, 0, 0, 0, 0)  # half, then nothing: huggingface-hub gives up
    status, lines = await pull(daemon_on_hub, NAME)
    assert "cannot reach Hugging Face" in lines[-1].get("error", ""), lines[-3:]
    assert manifests(daemon_on_hub) == []  # nothing half-pulled is visible
    kept = sum(p.stat().st_size for p in (daemon_on_hub.models / "partial").rglob("*.part"))
    assert kept > size // 4
    hub.reset_counters()
    status, lines = await pull(daemon_on_hub, NAME)
    assert lines[-1] == {"status": "success"}, lines[-3:]
    [(_, _, first_range)] = [r for r in hub.requests if r[0] == "GET" and "/cdn/" in r[1]]
    assert first_range == f"bytes={kept}-"
    assert hub.bytes_served == size - kept  # only the rest


async def test_two_names_for_one_file_share_one_download(
    daemon_on_hub: Daemon, hub: FakeHub, smollm2_gguf: Path
) -> None:
    hub.delay_per_chunk = 0.0005
    (_, first), (_, second) = await asyncio.gather(
        pull(daemon_on_hub, NAME), pull(daemon_on_hub, f"{NAME}:{GGUF}")
    )
    assert first[-1] == second[-1] == {"status": "success"}, (first[-3:], second[-3:])
    assert hub.bytes_served < 1.2 * smollm2_gguf.stat().st_size, hub.bytes_served_by_file
    assert len(manifests(daemon_on_hub)) == 2


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
async def test_a_full_disk_says_so_and_the_store_is_unchanged(
    daemon_on_hub: Daemon, hub: FakeHub
) -> None:
    # every write to /dev/full fails with ENOSPC: the kernel's own full disk
    partial = daemon_on_hub.models / "partial"
    partial.mkdir(parents=True)
    part = partial / f"sha256-{hub.file(REPO, GGUF).sha256}.part"
    part.symlink_to("/dev/full")
    status, lines = await pull(daemon_on_hub, NAME)
    error = lines[-1].get("error", "")
    assert "disk is full" in error and "pull again" in error, lines[-3:]
    assert manifests(daemon_on_hub) == []
    blobs = daemon_on_hub.models / "blobs"
    assert not blobs.exists() or not any(blobs.iterdir())
    part.unlink()
    status, lines = await pull(daemon_on_hub, NAME)
    assert lines[-1] == {"status": "success"}, lines[-3:]


def test_a_pull_that_cannot_fit_stops_before_downloading(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("olla.registry.pull.shutil.disk_usage", lambda _: usage(10**9, 0, 10**6))
    registry = Registry(tmp_path / "models")
    name, origin = resolve(NAME)
    plan = plan_pull(name, origin, hub.url, None)
    with pytest.raises(StorageError, match=r"needs 9\d MB more, 1.0 MB is free"):
        run_pull(plan, registry, lambda line: None, hub.url, None)
    assert hub.bytes_served == 0 and not (tmp_path / "models" / "manifests").exists()


async def test_ctrl_c_stops_the_pull_and_the_next_one_goes_on(
    daemon_on_hub: Daemon, hub: FakeHub, smollm2_gguf: Path
) -> None:
    size = smollm2_gguf.stat().st_size
    hub.delay_per_chunk = 0.01  # about 15 s for the whole file: time to press Ctrl-C
    # A shell that runs the suite in the background leaves SIGINT ignored, and the CLI would
    # inherit that: the child takes Python's own handler, as it has under a terminal.
    interruptible = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from olla.cli import main; main()"
    )
    cli_pull = subprocess.Popen(
        [sys.executable, "-c", interruptible, "pull", NAME],
        env=daemon_on_hub.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    part = daemon_on_hub.models / "partial" / f"sha256-{hub.file(REPO, GGUF).sha256}.part"
    await until(lambda: part.exists() and part.stat().st_size > 0, 30, "download under way")
    cli_pull.send_signal(signal.SIGINT)
    _, stderr = await asyncio.to_thread(cli_pull.communicate, timeout=30)
    assert cli_pull.returncode == 130 and "goes on from what was downloaded" in stderr, stderr
    await until(lambda: "pull stopped" in daemon_on_hub.log(), 30, "the daemon stops the pull")
    kept = part.stat().st_size
    assert 0 < kept < size and manifests(daemon_on_hub) == []
    hub.delay_per_chunk = 0
    hub.reset_counters()
    status, lines = await pull(daemon_on_hub, NAME)
    assert lines[-1] == {"status": "success"}, lines[-3:]
    assert hub.bytes_served == size - kept  # only the rest


def test_the_ollama_client_pulls_and_is_told_push_is_not_supported(daemon_on_hub: Daemon) -> None:
    import ollama

    client = ollama.Client(host=daemon_on_hub.base_url)
    statuses = [part.status for part in client.pull(NAME, stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert "verifying sha256 digest" in statuses and "writing manifest" in statuses
    assert client.pull(NAME).status == "success"  # again, whole: nothing to download
    with pytest.raises(ollama.ResponseError) as refused:
        client.push(NAME)
    assert refused.value.status_code == 501 and "does not push" in refused.value.error


async def test_a_pull_takes_the_projector_of_the_models_precision_once(
    daemon_on_hub: Daemon, hub: FakeHub, smollm2_gguf: Path, tmp_path: Path
) -> None:
    repo = "ggml-org/SmolVLM-256M-Instruct-GGUF"
    projectors = {
        f"mmproj-SmolVLM-256M-Instruct-{tag}.gguf": write_projector(
            tmp_path / f"{tag}.gguf", name=tag
        )
        for tag in ("F16", "Q8_0")
    }
    hub.add_repo(repo, {"SmolVLM-256M-Instruct-Q8_0.gguf": smollm2_gguf, **projectors})
    status, lines = await pull(daemon_on_hub, f"hf.co/{repo}:Q8_0")
    assert status == 200 and lines[-1]["status"] == "success", lines
    chosen = hub.file(repo, "mmproj-SmolVLM-256M-Instruct-Q8_0.gguf").sha256
    other = hub.file(repo, "mmproj-SmolVLM-256M-Instruct-F16.gguf").sha256
    assert (daemon_on_hub.models / "blobs" / f"sha256-{chosen}").is_file()
    assert not (daemon_on_hub.models / "blobs" / f"sha256-{other}").exists()
    async with aiohttp.ClientSession(base_url=daemon_on_hub.base_url) as s:
        async with s.post("/api/show", json={"model": f"hf.co/{repo}:Q8_0"}) as r:
            show = await r.json()
    assert show["projector_info"]["general.name"] == "Q8_0"
    assert show["capabilities"][:2] == ["completion", "vision"]
    served = hub.bytes_served
    status, lines = await pull(daemon_on_hub, f"hf.co/{repo}:Q8_0")
    assert status == 200 and lines[-1]["status"] == "success", lines
    assert hub.bytes_served == served  # model and projector were there: nothing downloaded
