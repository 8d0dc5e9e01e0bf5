"""The daemon's end of the runner protocol over a real unix socket pair."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from olla.wire import lines as protocol
from olla.wire.lines import LineProtocol, encode_message
from tests.conftest import until


async def _connect() -> tuple[LineProtocol, socket.socket, list[dict[str, Any]]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    received: list[dict[str, Any]] = []
    _, connection = await asyncio.get_running_loop().create_unix_connection(
        lambda: LineProtocol(received.append), sock=ours
    )
    return connection, theirs, received


async def test_lines_split_across_writes_and_joined_in_one_arrive_whole_in_order() -> None:
    connection, runner, received = await _connect()
    first, second = encode_message({"id": 1, "text": "é"}), encode_message({"id": 2, "done": True})
    runner.sendall(first[:5])
    runner.sendall(first[5:] + second[:3])
    runner.sendall(second[3:])
    await until(lambda: len(received) == 2, timeout=5, what="both lines")
    assert received == [{"id": 1, "text": "é"}, {"id": 2, "done": True}]
    assert not connection.closed.done()
    runner.close()
    assert await asyncio.wait_for(connection.closed, 5) is None


async def test_send_reaches_the_runner_as_one_line() -> None:
    connection, runner, _ = await _connect()
    connection.send({"op": "submit", "id": 7, "prompt": "x" * 100_000})
    data = b""
    runner.setblocking(False)
    loop = asyncio.get_running_loop()
    while not data.endswith(b"\n"):
        data += await loop.sock_recv(runner, 1 << 16)
    assert data == encode_message({"op": "submit", "id": 7, "prompt": "x" * 100_000})
    runner.close()


async def test_a_line_that_is_not_a_json_object_ends_the_connection_with_the_error() -> None:
    connection, runner, received = await _connect()
    runner.sendall(encode_message({"id": 1, "text": "a"}) + b"[1, 2]\n")
    error = await asyncio.wait_for(connection.closed, 5)
    assert isinstance(error, ValueError) and "JSON object" in str(error)
    assert received == [{"id": 1, "text": "a"}]
    runner.close()


async def test_an_overlong_line_ends_the_connection(monkeypatch: Any) -> None:
    monkeypatch.setattr(protocol, "LINE_LIMIT", 1000)
    connection, runner, received = await _connect()
    runner.sendall(b'{"id": 1, "text": "' + b"y" * 2000)
    error = await asyncio.wait_for(connection.closed, 5)
    assert isinstance(error, ValueError) and "longer than 1000" in str(error)
    assert received == []
    runner.close()
