"""The hand-over channel: how the daemon passes a client's socket to a runner (SCM_RIGHTS over a
socket pair made when the runner starts), tagged with the request it belongs to.

Why and in what steps: `olla.runner.direct`.
"""

from __future__ import annotations

import array
import os
import socket
import struct

_TAG = struct.Struct("!Q")  # the request id that goes with a socket


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """The daemon's end and the runner's end of a hand-over channel."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send_socket(channel: socket.socket, request_id: int, fd: int) -> None:
    """Pass `fd` (a connected socket) to the runner for request `request_id`."""
    channel.sendmsg(
        [_TAG.pack(request_id)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
    )


def receive_socket(channel: socket.socket) -> tuple[int, socket.socket] | None:
    """One handed-over socket and its request id; None when nothing is waiting."""
    fds = array.array("i")
    try:
        data, ancillary, _, _ = channel.recvmsg(_TAG.size, socket.CMSG_SPACE(fds.itemsize))
    except BlockingIOError:
        return None
    if not data and not ancillary:
        raise ConnectionResetError("the daemon closed the hand-over channel")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not fds:
        raise ConnectionError("hand-over channel: a message without a socket")
    for extra in fds[1:]:  # one socket a message; never keep strays open
        os.close(extra)
    sock = socket.socket(fileno=fds[0])
    if len(data) != _TAG.size:
        sock.close()
        raise ConnectionError("hand-over channel: a malformed message")
    return _TAG.unpack(data)[0], sock
