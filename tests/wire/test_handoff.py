"""The hand-over channel: a client's socket passed from the daemon to a runner."""

from __future__ import annotations

import socket

import pytest

from olla.wire.handoff import channel_pair, receive_socket, send_socket


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
