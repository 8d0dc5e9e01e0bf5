"""Which `Host` a daemon on loopback answers to: the guard against DNS rebinding.

A web page can point a name it controls at 127.0.0.1 (DNS rebinding) and so reach a daemon on
loopback as its own origin: no CORS check stops a same-origin request, and without keys nothing
else would. Such a request carries the page's name in `Host`, so a daemon that listens on
loopback only answers to names and addresses of this machine: `localhost` and `*.localhost`
(which RFC 6761 keeps on loopback), the machine's host name, the names an operator adds
(`OLLA_ALLOWED_HOSTS`), and any IP address but a public one that is not this machine's: an
address cannot be rebound, the one olla listens on is among them, and private ones are how VMs
and containers reach the host's loopback (QEMU's and slirp4netns' 10.0.2.2). Unlike Ollama,
`*.local` and `*.internal` are not allowed by default: any machine on the LAN may answer for a
`.local` name over mDNS, and the operator can add the names in use.

A daemon listening beyond loopback is meant to be reached by whatever name its network gives
it, and a unix socket cannot be reached by a browser at all: neither is checked (the keys and
the origin check guard those).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
from aiohttp import web

from olla.address import HostAddress
from olla.errors import Forbidden

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Listener = HostAddress | tuple[Any, ...] | str  # olla's address, or a socket's getsockname()
_BUILT_IN = ("localhost", "*.localhost")
_SHOWN = 100  # characters of a refused Host quoted back in the error


def machine_address(ip: IPAddress) -> bool:
    """Whether `ip` is assigned to one of this machine's network interfaces."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:  # an IPv6 address may carry its zone: fe80::1%eth0
                if ipaddress.ip_address(address.address.split("%", 1)[0]) == ip:
                    return True
            except ValueError:
                continue
    return False


def host_name(header: str) -> str | None:
    """The name or address in a `Host` value, lower case, without port, brackets or a final
    dot; None when the value is not `host[:port]`."""
    value = header.strip().lower()
    if value.startswith("["):  # [IPv6]:port
        inside, bracket, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None if rest else ""
        if not bracket or port is None or not _is_ip(inside):
            return None
        name = inside
    elif value.count(":") > 1:  # a bare IPv6 address, as some clients send it
        name, port = value, ""
    else:
        name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    return name[:-1] if name.endswith(".") else name


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostPolicy:
    """The names and addresses a daemon answers to, and whether it checks at all.

    Args:
        checked: False where the daemon listens beyond loopback or on a unix socket.
        names: the names allowed (lower case; `*` globs): localhost's, the host name, the
            operator's.
        machine: whether an address is this machine's (a seam for tests).
    """

    checked: bool
    names: tuple[str, ...] = ()
    machine: Callable[[IPAddress], bool] = field(default=machine_address)

    @classmethod
    def for_listener(
        cls, listen: Listener, allowed: tuple[str, ...], hostname: str | None = None
    ) -> HostPolicy:
        """The policy of a daemon listening on `listen` (olla's address, or the address of a
        socket systemd passed), with the operator's `allowed` names."""
        own = (hostname if hostname is not None else socket.gethostname()).lower()
        names = (*_BUILT_IN, own, *allowed)  # the listen address: loopback, so allowed below
        return cls(checked=listens_on_loopback(listen), names=tuple(n for n in names if n))

    def allows(self, header: str | None) -> bool:
        """Whether a request whose `Host` is `header` (None: absent) may be answered."""
        if not self.checked or header is None or not header.strip():
            return True  # no Host at all (HTTP/1.0): not a browser, so not a rebinding
        name = host_name(header)
        if name is None:
            return False
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.names)
        if not ip.is_global:  # loopback, unspecified, private, link-local
            return True
        return self.machine(ip) or any(
            fnmatch.fnmatchcase(ip.compressed, pattern) for pattern in self.names
        )


def listens_on_loopback(listen: Listener) -> bool:
    """Whether a TCP listener is bound to a loopback address only (a unix socket is not TCP):
    `listen` is olla's address or a socket's `getsockname()`."""
    if isinstance(listen, HostAddress):
        return not listen.is_unix and listen.is_loopback
    if isinstance(listen, tuple) and listen and isinstance(listen[0], str) and _is_ip(listen[0]):
        ip = ipaddress.ip_address(listen[0])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return (mapped or ip).is_loopback
    return False  # a unix socket's path


HOST_POLICY = web.AppKey("host_policy", HostPolicy)


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse (403) a request whose `Host` is not this machine's, on a loopback daemon."""
    host = request.headers.get("Host")  # aiohttp's parser refuses two, and HTTP/1.1 with none
    if not request.app[HOST_POLICY].allows(host):
        raise Forbidden(
            f'Host "{(host or "")[:_SHOWN]}" is not allowed: olla on a loopback address answers '
            "only to this machine's names and addresses (a guard against DNS rebinding); to "
            "reach it by this name, add the name to OLLA_ALLOWED_HOSTS (comma-separated)"
        )
    return await handler(request)
