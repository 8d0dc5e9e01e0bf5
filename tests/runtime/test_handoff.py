"""A runner's direct stream into a client's socket: chunk framing, buffering, the last message."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any

import pytest

from olla.runtime.handoff import (
    CLIENT_GONE,
    DirectStream,
    channel_pair,
    receive_socket,
    send_socket,
)


class _Daemon:
    """What the stream tells the daemon: its last messages, and whether it found the client gone."""

    def __init__(self) -> None:
        self.last: list[dict[str, Any]] = []
        self.broken = 0

    def on_last(self, message: dict[str, Any]) -> None:
        self.last.append(message)

    def on_broken(self) -> None:
        self.broken += 1


def _stream(daemon: _Daemon, kind: str = "response") -> DirectStream:
    direct = {"model": "m:latest", "kind": kind}
    loop = asyncio.get_running_loop()
    return DirectStream(7, direct, loop, daemon.on_last, daemon.on_broken)


def _chunks(data: bytes) -> list[dict[str, Any]]:
    """Decode HTTP chunks (without the terminating one) into the NDJSON lines they carry."""
    lines = []
    while data:
        size, rest = data.split(b"\r\n", 1)
        length = int(size, 16)
        assert rest[length : length + 2] == b"\r\n", "a chunk must end with CRLF"
        lines.append(json.loads(rest[:length]))
        data = rest[length + 2 :]
    return lines


def _read_all(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    data = b""
    while True:
        try:
            more = sock.recv(1 << 16)
        except BlockingIOError:
            return data
        if not more:
            return data
        data += more


async def test_text_waits_for_the_socket_then_goes_out_as_chunks_before_the_last_message() -> None:
    daemon = _Daemon()
    stream = _stream(daemon, kind="message")
    runner_end, client = socket.socketpair()
    stream.write("Hel")
    stream.write("lo é")
    stream.finish({"id": 7, "done": True})
    assert daemon.last == []  # nothing may end before the text is out
    stream.attach(runner_end)
    assert daemon.last[0]["done"] and len(daemon.last[0]["chunks_ns"]) == 2
    lines = _chunks(_read_all(client))
    assert [line["message"] for line in lines] == [
        {"role": "assistant", "content": "Hel"},
        {"role": "assistant", "content": "lo é"},
    ]
    assert all(line["model"] == "m:latest" and line["done"] is False for line in lines)
    assert client.recv(1) == b"", "the runner must let go of the socket when done"
    assert daemon.broken == 0 and stream.ended


async def test_a_slow_client_gets_every_chunk_and_the_last_message_waits_for_it() -> None:
    daemon = _Daemon()
    stream = _stream(daemon)
    runner_end, client = socket.socketpair()
    runner_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stream.attach(runner_end)
    texts = [f"token {i} " + "x" * 200 for i in range(300)]  # far more than the buffers hold

    def engine() -> None:  # the engine thread never blocks on the client
        for text in texts:
            stream.write(text)
        stream.finish({"id": 7, "done": True})

    thread = threading.Thread(target=engine)
    thread.start()
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()
    assert daemon.last == []
    received = b""
    loop = asyncio.get_running_loop()
    client.setblocking(False)
    while not daemon.last:
        received += await asyncio.wait_for(loop.sock_recv(client, 1 << 16), 5)
    received += _read_all(client)
    assert [line["response"] for line in _chunks(received)] == texts
    assert daemon.last[0]["done"] and daemon.broken == 0


async def test_a_client_that_has_gone_ends_the_stream_with_499_once() -> None:
    daemon = _Daemon()
    stream = _stream(daemon)
    runner_end, client = socket.socketpair()
    stream.attach(runner_end)
    client.close()
    stream.write("a")
    stream.write("b")
    stream.finish({"id": 7, "done": True})
    assert daemon.last == [{"id": 7, "error": CLIENT_GONE, "status": 499}]
    assert daemon.broken == 1


async def test_abandon_lets_go_of_the_socket_before_saying_so_and_writes_nothing_more() -> None:
    daemon = _Daemon()
    stream = _stream(daemon)
    runner_end, client = socket.socketpair()
    stream.attach(runner_end)
    stream.write("a")
    stream.abandon()
    stream.write("b")
    stream.finish({"id": 7, "done": True})
    stream.abandon()
    assert daemon.last == [{"id": 7, "error": "cancelled", "status": 499}]
    assert [line["response"] for line in _chunks(_read_all(client))] == ["a"]
    assert client.recv(1) == b""
    late, _ = socket.socketpair()
    stream.attach(late)  # a socket that comes after the end is closed at once
    assert late.fileno() == -1


async def test_a_socket_passed_over_the_channel_is_the_same_connection() -> None:
    daemon_end, runner_end = channel_pair()
    runner_end.setblocking(False)
    assert receive_socket(runner_end) is None
    ours, peer = socket.socketpair()
    send_socket(daemon_end, 42, ours.fileno())
    received = receive_socket(runner_end)
    assert received is not None
    request_id, passed = received
    assert request_id == 42 and passed.fileno() != ours.fileno()
    passed.sendall(b"through the runner")
    passed.close()
    assert peer.recv(100) == b"through the runner"
    ours.sendall(b"still the daemon's")
    assert peer.recv(100) == b"still the daemon's"


async def test_a_channel_message_without_a_socket_is_an_error() -> None:
    daemon_end, runner_end = channel_pair()
    daemon_end.send(b"\0" * 8)
    with pytest.raises(ConnectionError, match="without a socket"):
        receive_socket(runner_end)


async def test_a_closed_channel_says_so() -> None:
    daemon_end, runner_end = channel_pair()
    daemon_end.close()
    with pytest.raises(ConnectionResetError, match="closed the hand-over channel"):
        receive_socket(runner_end)
