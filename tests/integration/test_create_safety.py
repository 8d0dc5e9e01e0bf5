"""/api/create and /api/blobs against a real daemon: a client cannot make the daemon read its
own files, a template that cannot parse is refused at create, and an upload the disk cannot take
or the client abandons leaves nothing behind.

The probes of issue 23 (`ADAPTER /etc/passwd` copied the file into the store, `FROM /etc/shadow`
showed its first bytes, `ADAPTER /dev/zero` filled the disk) each get a clean 400 now.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, until
from tests.registry.test_adapter_check import write as write_adapter
from tests.registry.test_gguf_info import write_gguf
from tests.server.test_api_routes import call, upload

SECRET = b"s3cr:$6$salt$not-for-clients:19000:0:99999:7:::\n"
MIB = 1 << 20


def store_files(daemon: Daemon) -> set[str]:
    """Every file in the blob store, temp files included."""
    blobs = daemon.models / "blobs"
    return {p.name for p in blobs.iterdir()} if blobs.exists() else set()


def temp_files(daemon: Daemon) -> set[str]:
    return {name for name in store_files(daemon) if name.startswith(".tmp-")}


async def create_smol(daemon: Daemon, tmp_path: Path) -> None:
    """A model called smol (the probes build on one), from a tiny GGUF."""
    digest = await upload(daemon, write_gguf(tmp_path / "smol.gguf").read_bytes())
    body = {"model": "smol", "files": {"smol.gguf": digest}, "stream": False}
    assert await call(daemon, "POST", "/api/create", body) == (200, {"status": "success"})


PROBES = [
    pytest.param({"modelfile": "FROM smol\nADAPTER {secret}"}, "ADAPTER", id="adapter-file"),
    pytest.param({"modelfile": "FROM {secret}"}, "FROM", id="from-file"),
    pytest.param({"modelfile": "FROM smol\nADAPTER /dev/zero"}, "ADAPTER", id="adapter-dev-zero"),
    pytest.param({"modelfile": "FROM /etc/passwd"}, "FROM", id="from-etc-passwd"),
    pytest.param({"from": "{secret}"}, "FROM", id="from-field"),
]


@pytest.mark.parametrize(("body", "instruction"), PROBES)
async def test_create_never_reads_a_path_on_the_daemons_machine(
    daemon: Daemon, tmp_path: Path, body: dict[str, str], instruction: str
) -> None:
    await create_smol(daemon, tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    before = store_files(daemon)
    filled = {key: value.replace("{secret}", str(secret)) for key, value in body.items()}

    status, got = await asyncio.wait_for(
        call(daemon, "POST", "/api/create", {"model": "probe", **filled}), timeout=30
    )

    assert status == 400, got
    error = got["error"]
    assert error.startswith(f'{instruction} "') and '" is a path' in error
    assert "POST /api/blobs/<digest>" in error and "olla create NAME -f Modelfile" in error
    assert b"s3cr" not in error.encode() and "root:" not in error  # no byte of any file
    assert store_files(daemon) == before
    digest = "sha256:" + hashlib.sha256(SECRET).hexdigest()
    assert (await call(daemon, "HEAD", f"/api/blobs/{digest}"))[0] == 404
    _, tags = await call(daemon, "GET", "/api/tags")
    assert [m["name"] for m in tags["models"]] == ["smol:latest"]


async def test_a_path_alone_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    (tmp_path / "Modelfile").write_text("FROM smol\n")
    body = {"model": "x", "path": str(tmp_path / "Modelfile")}
    status, got = await call(daemon, "POST", "/api/create", body)
    assert status == 400 and got["error"].startswith('"path" names a Modelfile on the daemon')


async def test_modelfile_text_builds_on_names_and_digests(daemon: Daemon, tmp_path: Path) -> None:
    await create_smol(daemon, tmp_path)
    adapter = await upload(daemon, write_adapter(tmp_path / "lora.gguf", {}).read_bytes())
    body = {"model": "x", "modelfile": f"FROM smol\nADAPTER {adapter}\nSYSTEM Hi.", "stream": False}
    assert await call(daemon, "POST", "/api/create", body) == (200, {"status": "success"})
    _, shown = await call(daemon, "POST", "/api/show", {"model": "x"})
    assert shown["system"] == "Hi."
    assert f"ADAPTER {daemon.models / 'blobs' / adapter.replace(':', '-')}" in shown["modelfile"]


TEMPLATES: list[Any] = [
    pytest.param({"template": "{{ if }}"}, "line 1, column 1: missing value for if", id="body"),
    pytest.param(
        {"modelfile": 'FROM smol\nTEMPLATE """{{ range .Messages }}\n{{ .Content }}"""'},
        "line 1, column 1: missing {{end}} for {{range}}",
        id="modelfile",
    ),
]


@pytest.mark.parametrize(("fields", "where"), TEMPLATES)
async def test_a_template_that_cannot_parse_is_a_400_at_create(
    daemon: Daemon, tmp_path: Path, fields: dict[str, str], where: str
) -> None:
    await create_smol(daemon, tmp_path)
    before = store_files(daemon)
    body = {"model": "bad", "from": "smol", **fields}
    status, got = await call(daemon, "POST", "/api/create", body)
    assert status == 400, got
    assert got["error"].startswith(f"TEMPLATE does not parse: {where}")
    assert store_files(daemon) == before
    assert (await call(daemon, "POST", "/api/show", {"model": "bad"}))[0] == 404


async def raw_post(daemon: Daemon, path: str, length: int, body: bytes = b"") -> Any:
    """A POST written by hand: a Content-Length the body need not match. Returns the stream."""
    host, port = daemon.host.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"POST {path} HTTP/1.1\r\nHost: {daemon.host}\r\nContent-Length: {length}\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    return reader, writer


async def test_an_upload_larger_than_the_disk_is_refused_at_once(daemon: Daemon) -> None:
    digest = "sha256:" + "0" * 64
    reader, writer = await raw_post(daemon, f"/api/blobs/{digest}", 1 << 62)
    try:
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        assert status_line.split()[1] == b"507", status_line
        rest = await asyncio.wait_for(reader.read(4096), timeout=10)
        assert b"not enough disk space for a blob of" in rest
    finally:
        writer.close()
    assert store_files(daemon) == set()


async def test_an_abandoned_upload_stops_and_leaves_no_temp_file(daemon: Daemon) -> None:
    digest = "sha256:" + hashlib.sha256(bytes(8 * MIB)).hexdigest()
    reader, writer = await raw_post(daemon, f"/api/blobs/{digest}", 8 * MIB, bytes(2 * MIB))
    await until(lambda: bool(temp_files(daemon)), 10, "the upload's temp file")
    writer.close()
    await writer.wait_closed()
    await until(lambda: not temp_files(daemon), 10, "the temp file to be removed")
    assert (await call(daemon, "HEAD", f"/api/blobs/{digest}"))[0] == 404
    # the daemon still takes uploads
    assert await upload(daemon, b"after") == "sha256:" + hashlib.sha256(b"after").hexdigest()
