"""systemd integration without libsystemd: socket activation and sd_notify.

Socket activation: systemd opens the listening socket (olla.socket) and starts olla with it as
fd 3, `LISTEN_FDS=1` and `LISTEN_PID` set to olla's pid. Readiness: with `Type=notify` systemd
waits for `READY=1` on the datagram socket named by `NOTIFY_SOCKET`, and olla says `STOPPING=1`
as it shuts down. Both are a few lines of the documented protocol (sd_listen_fds(3),
sd_notify(3)).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

_FIRST_FD = 3  # SD_LISTEN_FDS_START
_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def inherited_socket(environ: MutableMapping[str, str]) -> socket.socket | None:
    """The listening socket systemd passed to this process, if any.

    The variables are removed once read (as sd_listen_fds(1) does), so that runners, olla's
    children, never take the socket for theirs.
    """
    mine = environ.get("LISTEN_PID") == str(os.getpid())
    count = int(environ.get("LISTEN_FDS", "0") or 0) if mine else 0
    for name in _LISTEN_VARS:
        environ.pop(name, None)
    if count < 1:
        return None
    if count > 1:
        log.warning("systemd passed %d sockets; olla serves on the first", count)
    sock = socket.socket(fileno=_FIRST_FD)  # family and type are read from the descriptor
    sock.setblocking(False)
    return sock


def notify(message: str, environ: MutableMapping[str, str]) -> bool:
    """Send `message` (e.g. "READY=1") to systemd's notification socket; False without one."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True
