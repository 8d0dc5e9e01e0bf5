"""EXL2 model directories through a real daemon: create from a directory, list, show, copy,
remove; and without exllamav2 installed (as in CI), a clear 501 when one is asked to generate.
Loading one needs a CUDA GPU: docs/gpu.md has what was measured there."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Daemon
from tests.daemon_helpers import api, olla
from tests.model_dirs import CHAT_TEMPLATE, model_files, write_model_dir


async def create_exl2(daemon: Daemon, tmp_path: Path, name: str = "exl2") -> Path:
    directory = write_model_dir(tmp_path / "SmolLM2-exl2")
    (tmp_path / "Modelfile").write_text("FROM ./SmolLM2-exl2\nPARAMETER temperature 0.2\n")
    out = await olla(daemon, "create", name, "-f", str(tmp_path / "Modelfile"))
    assert out.exit_code == 0, out.output
    return directory


async def test_a_directory_is_created_listed_shown_copied_and_removed(
    daemon: Daemon, tmp_path: Path
) -> None:
    await create_exl2(daemon, tmp_path)
    (model,) = (await api(daemon, "GET", "/api/tags"))["models"]
    assert model["name"] == "exl2:latest"
    details = model["details"]
    assert (details["format"], details["family"]) == ("exl2", "llama")
    assert (details["parameter_size"], details["quantization_level"]) == ("135M", "4.0bpw")
    files = model_files()
    assert model["size"] > sum(len(data) for data in files.values())  # + params, config blob
    shown = await api(daemon, "POST", "/api/show", {"model": "exl2"})
    assert shown["template"] == CHAT_TEMPLATE  # from tokenizer_config.json
    assert shown["model_info"]["llama.context_length"] == 8192
    assert shown["parameters"].split() == ["temperature", "0.2"]
    # each file is a blob of its own, under its name; the README stayed behind
    manifest_dir = daemon.models / "manifests" / "registry.ollama.ai" / "library" / "exl2"
    assert (manifest_dir / "latest").is_file()
    store = daemon.models / "blobs"
    for data in files.values():
        digest = hashlib.sha256(data).hexdigest()
        assert (store / f"sha256-{digest}").read_bytes() == data
    out = await olla(daemon, "cp", "exl2", "exl2-copy")
    assert out.exit_code == 0, out.output
    listed = await olla(daemon, "list")
    assert "exl2-copy:latest" in listed.output and "exl2:latest" in listed.output
    for name in ("exl2", "exl2-copy"):
        out = await olla(daemon, "rm", name)
        assert out.exit_code == 0, out.output
    assert (await api(daemon, "GET", "/api/tags"))["models"] == []
    assert not any(store.iterdir()), "every blob is pruned with the last model using it"
    assert not any((daemon.models / "dirs").glob("*")), "the link directories go too"


@pytest.mark.skipif(
    importlib.util.find_spec("exllamav2") is not None, reason="exllamav2 is installed here"
)
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/generate", {"model": "exl2", "prompt": "Hi"}),
        ("/api/chat", {"model": "exl2", "messages": [{"role": "user", "content": "Hi"}]}),
        (
            "/v1/chat/completions",
            {"model": "exl2", "messages": [{"role": "user", "content": "Hi"}]},
        ),
    ],
)
async def test_without_exllamav2_generation_is_a_501_that_says_what_to_install(
    daemon: Daemon, tmp_path: Path, path: str, body: dict[str, object]
) -> None:
    await create_exl2(daemon, tmp_path)
    async with aiohttp.ClientSession(base_url=daemon.base_url) as s:
        async with s.post(path, json=body) as r:
            assert r.status == 501
            error = (await r.json())["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert "exllamav2" in message and "pip install 'olla[exl2]'" in message
    assert (await api(daemon, "GET", "/api/ps"))["models"] == []


async def test_a_directory_that_is_not_a_model_is_refused_before_any_upload(
    daemon: Daemon, tmp_path: Path
) -> None:
    files = {k: v for k, v in model_files().items() if not k.endswith(".safetensors")}
    write_model_dir(tmp_path / "half", files)
    (tmp_path / "Modelfile").write_text("FROM ./half\n")
    out = await olla(daemon, "create", "half", "-f", str(tmp_path / "Modelfile"))
    assert out.exit_code == 1
    assert "lacks weights (*.safetensors)" in out.output
    assert not (daemon.models / "blobs").exists() or not any((daemon.models / "blobs").iterdir())
