"""/api/blobs against a real daemon: an upload the disk cannot take or the client abandons
leaves nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from tests.conftest import Daemon, until
from tests.server.test_api_routes import call, upload

MIB = 1 << 20


def store_files(daemon: Daemon) -> set[str]:
    """Every file in the blob store, temp files included."""
    blobs = daemon.models / "blobs"
    return {p.name for p in blobs.iterdir()} if blobs.exists() else set()


def temp_files(daemon: Daemon) -> set[str]:
    return {name for name in store_files(daemon) if name.startswith(".tmp-")}


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
