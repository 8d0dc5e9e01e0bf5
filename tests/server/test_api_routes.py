"""The /api/* routes of a real daemon: Ollama's shapes, and the status of every bad request."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from olla import __version__
from tests.conftest import Daemon


async def call(
    d: Daemon, method: str, path: str, body: Any = None, data: bytes | None = None
) -> tuple[int, Any]:
    async with aiohttp.ClientSession(base_url=d.base_url) as session:
        kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": body}
        async with session.request(method, path, **kwargs) as response:
            text = await response.text()
            if response.content_type == "application/x-ndjson":
                return response.status, [json.loads(line) for line in text.splitlines()]
            try:
                return response.status, json.loads(text) if text else None
            except json.JSONDecodeError:
                return response.status, text


async def upload(d: Daemon, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, _ = await call(d, "POST", f"/api/blobs/{digest}", data=data)
    assert status == 201
    return digest


async def create_from_gguf(d: Daemon, gguf: Path, name: str = "tiny", **extra: Any) -> Any:
    digest = await upload(d, gguf.read_bytes())
    body = {"model": name, "files": {gguf.name: digest}, **extra}
    return await call(d, "POST", "/api/create", body)


async def test_root_and_version(daemon: Daemon) -> None:
    assert await call(daemon, "GET", "/") == (200, "olla is running")
    assert await call(daemon, "GET", "/api/version") == (200, {"version": __version__})
    assert await call(daemon, "GET", "/api/tags") == (200, {"models": []})


async def test_create_streams_status_and_show_reports(daemon: Daemon, smollm2_gguf: Path) -> None:
    status, lines = await create_from_gguf(
        daemon,
        smollm2_gguf,
        system="Be brief.",
        parameters={"temperature": 0.1, "stop": ["###"]},
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        license="MIT",
    )
    assert status == 200
    statuses = [line["status"] for line in lines]
    assert statuses[-2:] == ["writing manifest", "success"]
    assert any(s.startswith("using existing layer sha256:") for s in statuses)
    assert any(s.startswith("creating new layer sha256:") for s in statuses)

    status, tags = await call(daemon, "GET", "/api/tags")
    (model,) = tags["models"]
    assert model["name"] == model["model"] == "tiny:latest"
    assert model["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "134.52M",
        "quantization_level": "Q4_1",
        "context_length": 8192,  # as Ollama 0.30 lists them, from the GGUF
        "embedding_length": 576,
    }
    assert model["capabilities"] == ["completion"]  # SmolLM2's template offers no tools
    assert len(model["digest"]) == 64 and model["size"] > smollm2_gguf.stat().st_size

    status, shown = await call(daemon, "POST", "/api/show", {"model": "tiny"})
    assert status == 200
    assert shown["system"] == "Be brief." and shown["license"] == "MIT"
    assert shown["messages"][1] == {"role": "assistant", "content": "hello"}
    assert 'stop                           "###"' in shown["parameters"]
    assert shown["model_info"]["general.architecture"] == "llama"
    assert shown["model_info"]["llama.context_length"] == 8192
    assert shown["model_info"]["tokenizer.ggml.tokens"] is None  # long arrays only when verbose
    _, verbose = await call(daemon, "POST", "/api/show", {"model": "tiny", "verbose": True})
    assert len(verbose["model_info"]["tokenizer.ggml.tokens"]) == 49152
    assert shown["capabilities"] == model["capabilities"]


async def test_create_non_stream_and_from_existing(daemon: Daemon, smollm2_gguf: Path) -> None:
    status, final = await create_from_gguf(daemon, smollm2_gguf, stream=False)
    assert (status, final) == (200, {"status": "success"})
    body = {"model": "derived", "from": "tiny", "system": "Talk like a pirate.", "stream": False}
    assert await call(daemon, "POST", "/api/create", body) == (200, {"status": "success"})
    _, shown = await call(daemon, "POST", "/api/show", {"model": "derived"})
    assert shown["system"] == "Talk like a pirate."
    assert shown["details"]["quantization_level"] == "Q4_1"


async def test_copy_and_delete(daemon: Daemon, smollm2_gguf: Path) -> None:
    await create_from_gguf(daemon, smollm2_gguf)
    assert await call(daemon, "POST", "/api/copy", {"source": "tiny", "destination": "x/y:z"}) == (
        200,
        None,
    )
    assert await call(daemon, "DELETE", "/api/delete", {"model": "tiny"}) == (200, None)
    _, tags = await call(daemon, "GET", "/api/tags")
    assert [m["name"] for m in tags["models"]] == ["x/y:z"]
    assert (await call(daemon, "DELETE", "/api/delete", {"model": "tiny"}))[0] == 404


async def test_blobs(daemon: Daemon) -> None:
    data = b"some adapter bytes"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert (await call(daemon, "HEAD", f"/api/blobs/{digest}"))[0] == 404
    assert await upload(daemon, data) == digest
    assert (await call(daemon, "HEAD", f"/api/blobs/{digest}"))[0] == 200
    assert (daemon.models / "blobs" / digest.replace(":", "-")).read_bytes() == data
    other = "sha256:" + "0" * 64
    status, body = await call(daemon, "POST", f"/api/blobs/{other}", data=b"not matching")
    assert status == 400 and "digest mismatch" in body["error"]
    assert (await call(daemon, "HEAD", f"/api/blobs/{other}"))[0] == 404
    assert not [p for p in (daemon.models / "blobs").iterdir() if p.name.startswith(".tmp")]


BAD_REQUESTS = [
    ("POST", "/api/show", {"model": "nope"}, 404, "model 'nope:latest' not found"),
    ("POST", "/api/show", {}, 400, 'missing field "model"'),
    ("POST", "/api/show", {"model": "../../etc/passwd"}, 400, "invalid model name"),
    ("POST", "/api/show", {"model": 5}, 400, 'field "model" must be a string'),
    ("POST", "/api/show", [1, 2], 400, "must be a JSON object"),
    ("POST", "/api/copy", {"source": "nope", "destination": "b"}, 404, "not found"),
    ("POST", "/api/copy", {"source": "a"}, 400, 'missing field "destination"'),
    ("DELETE", "/api/delete", {"model": "nope"}, 404, "not found"),
    ("POST", "/api/create", {"model": "x"}, 400, 'neither "from" nor "files"'),
    ("POST", "/api/create", {"model": "x", "from": "nope"}, 404, "not found"),
    ("POST", "/api/create", {"model": "x", "files": {"a.gguf": "sha256:12"}}, 400, "64 hex digits"),
    (
        "POST",
        "/api/create",
        {"model": "x", "files": {"a.gguf": "sha256:" + "1" * 64}},
        400,
        "not in the store",
    ),
    (
        "POST",
        "/api/create",
        {"model": "x", "from": "y", "parameters": {"temprature": 1}},
        400,
        "temprature",
    ),
    (
        "POST",
        "/api/create",
        {"model": "x", "from": "y", "parameters": {"num_ctx": "big"}},
        400,
        "num_ctx",
    ),
    (
        "POST",
        "/api/create",
        {"model": "x", "from": "y", "messages": [{"role": "tool"}]},
        400,
        "must be one of user, assistant, system",
    ),
    ("POST", "/api/chat", {"model": "nope", "messages": []}, 404, "not found"),
    ("POST", "/api/chat", {"model": "a", "messages": [{"role": "robot"}]}, 400, "role"),
    ("GET", "/api/nothing", None, 404, "no such route"),
    ("GET", "/api/show", None, 405, "method GET not allowed"),
    ("HEAD", "/api/blobs/sha256:bad", None, 400, None),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), BAD_REQUESTS)
async def test_bad_requests(
    daemon: Daemon, method: str, path: str, body: Any, status: int, fragment: str | None
) -> None:
    got_status, got = await call(daemon, method, path, body)
    assert got_status == status
    if fragment is not None:
        assert fragment in got["error"]


async def test_invalid_json_and_oversized_body(daemon: Daemon) -> None:
    status, body = await call(daemon, "POST", "/api/show", data=b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]
    big = json.dumps({"model": "x", "system": "a" * (17 * 1024 * 1024)}).encode()
    status, body = await call(daemon, "POST", "/api/create", data=big)
    assert status == 413 and "OLLA_MAX_REQUEST_BYTES" in body["error"]


async def test_create_rejects_a_blob_that_is_not_gguf(daemon: Daemon) -> None:
    digest = await upload(daemon, b"this is not a model")
    body = {"model": "x", "files": {"model.gguf": digest}}
    status, got = await call(daemon, "POST", "/api/create", body)
    assert status == 400 and "not a GGUF model file" in got["error"]
    body = {"model": "x", "files": {"model.safetensors": digest}}  # a directory model's part
    status, got = await call(daemon, "POST", "/api/create", body)
    assert status == 400 and "lacks config.json" in got["error"]
    body = {"model": "x", "files": {"pytorch_model.bin": digest}}
    status, got = await call(daemon, "POST", "/api/create", body)
    assert status == 501 and "convert them to GGUF" in got["error"]
    assert (await call(daemon, "GET", "/api/tags"))[1] == {"models": []}


async def test_chat_streams_and_answers(daemon: Daemon, smollm2_gguf: Path) -> None:
    await create_from_gguf(daemon, smollm2_gguf)
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Say hello."}],
        "options": {"num_predict": 8, "temperature": 0},
    }
    status, lines = await call(daemon, "POST", "/api/chat", body)
    assert status == 200
    assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"]
    final = lines[-1]
    assert final["eval_count"] == 8 and final["done_reason"] == "length"
    assert final["prompt_eval_count"] > 5 and final["total_duration"] > 0
    text = "".join(line["message"]["content"] for line in lines)
    assert text.strip()
    status, single = await call(daemon, "POST", "/api/chat", {**body, "stream": False})
    assert status == 200 and single["done"] and single["message"]["content"] == text
    status, loaded = await call(daemon, "POST", "/api/generate", {"model": "tiny"})
    assert status == 200
    assert loaded[-1]["done_reason"] == "load"


async def test_create_from_modelfile_text(daemon: Daemon, smollm2_gguf: Path) -> None:
    """Ollama's older form: the Modelfile itself in the body, FROM an uploaded blob's digest (a
    path on the daemon's host is refused: tests/integration/test_create_safety.py)."""
    digest = await upload(daemon, smollm2_gguf.read_bytes())
    body = {
        "model": "legacy",
        "modelfile": f"FROM {digest}\nSYSTEM Old style.\n",
        "stream": False,
    }
    assert await call(daemon, "POST", "/api/create", body) == (200, {"status": "success"})
    _, shown = await call(daemon, "POST", "/api/show", {"model": "legacy"})
    assert shown["system"] == "Old style."
    status, got = await call(daemon, "POST", "/api/create", {"model": "x", "modelfile": "FRM x"})
    assert status == 400 and got["error"].startswith("line 1: unknown instruction")
    body = {"model": "x", "modelfile": f"FROM {smollm2_gguf}"}
    status, got = await call(daemon, "POST", "/api/create", body)
    assert status == 400 and got["error"].startswith(f'FROM "{smollm2_gguf}" is a path')


async def test_an_unknown_openai_model_is_openais_404(daemon: Daemon) -> None:
    status, body = await call(daemon, "GET", "/v1/models/nope:7b")
    assert status == 404
    assert body["error"]["message"] == "The model 'nope:7b' does not exist"
    assert body["error"]["code"] == "model_not_found"
