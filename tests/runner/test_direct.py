"""A runner's direct stream into a client's socket: chunk framing, buffering, the last message."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any

from olla.runner.direct import CLIENT_GONE, DirectStream
from olla.wire.messages import Direct, Done, Failure


class _Daemon:
    """What the stream tells the daemon: its last messages, and whether it found the client gone."""

    def __init__(self) -> None:
        self.last: list[Done | Failure] = []
        self.broken = 0

    def on_last(self, message: Done | Failure) -> None:
        self.last.append(message)

    def on_broken(self) -> None:
        self.broken += 1


def _stream(daemon: _Daemon, kind: str = "response") -> DirectStream:
    direct = Direct("m:latest", kind)
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
    stream.finish(Done(7, "stop"))
    assert daemon.last == []  # nothing may end before the text is out
    stream.attach(runner_end)
    (last,) = daemon.last
    assert isinstance(last, Done) and len(last.chunks_ns) == 2
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
        stream.finish(Done(7, "stop"))

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
    assert isinstance(daemon.last[0], Done) and daemon.broken == 0


async def test_a_client_that_has_gone_ends_the_stream_with_499_once() -> None:
    daemon = _Daemon()
    stream = _stream(daemon)
    runner_end, client = socket.socketpair()
    stream.attach(runner_end)
    client.close()
    stream.write("a")
    stream.write("b")
    stream.finish(Done(7, "stop"))
    assert daemon.last == [Failure(7, CLIENT_GONE, 499, "Interrupted")]
    assert daemon.broken == 1


async def test_abandon_lets_go_of_the_socket_before_saying_so_and_writes_nothing_more() -> None:
    daemon = _Daemon()
    stream = _stream(daemon)
    runner_end, client = socket.socketpair()
    stream.attach(runner_end)
    stream.write("a")
    stream.abandon()
    stream.write("b")
    stream.finish(Done(7, "stop"))
    stream.abandon()
    assert daemon.last == [Failure(7, "cancelled", 499, "Interrupted")]
    assert [line["response"] for line in _chunks(_read_all(client))] == ["a"]
    assert client.recv(1) == b""
    late, _ = socket.socketpair()
    stream.attach(late)  # a socket that comes after the end is closed at once
    assert late.fileno() == -1
