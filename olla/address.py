"""Where the daemon listens and the CLI connects: a TCP host and port, or a unix socket."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

DEFAULT_PORT = 11435


@dataclass(frozen=True)
class HostAddress:
    """Where the daemon listens and the CLI connects: TCP host and port, or a unix socket."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    socket_path: str | None = None

    @classmethod
    def parse(cls, text: str) -> HostAddress:
        """Parse `host:port`, `http://host:port`, `[::1]:port`, `host`, `:port` or `unix:/path`."""
        value = text.strip()
        if value.startswith("unix:"):
            path = value[len("unix:") :]
            path = path[2:] if path.startswith("//") else path
            if not path:
                raise ValueError(
                    f'invalid host "{text}": unix sockets are written unix:/path/to/sock'
                )
            return cls(host="", port=0, socket_path=os.path.expanduser(path))
        scheme, sep, rest = value.partition("://")
        if sep:
            if scheme.lower() != "http":
                raise ValueError(f'invalid host "{text}": only http:// is supported (no TLS)')
            value = rest.rstrip("/")
        host, port = _split_host_port(value, text)
        return cls(host=host or "127.0.0.1", port=port)

    @property
    def is_unix(self) -> bool:
        return self.socket_path is not None

    @property
    def is_loopback(self) -> bool:
        """Only this machine can connect: a unix socket, localhost or a loopback address."""
        if self.is_unix or self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to anything

    @property
    def connect_host(self) -> str:
        """Address a client should dial: wildcard binds are reached on loopback."""
        if self.host in ("0.0.0.0", ""):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host

    @property
    def base_url(self) -> str:
        """HTTP base URL for clients (the host is a placeholder for unix sockets)."""
        if self.is_unix:
            return "http://localhost"
        host = self.connect_host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def __str__(self) -> str:
        if self.is_unix:
            return f"unix:{self.socket_path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _split_host_port(value: str, original: str) -> tuple[str, int]:
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f'invalid host "{original}"')
    elif value.count(":") > 1:
        host, port_text = value, ""  # a bare IPv6 address
    else:
        host, _, port_text = value.partition(":")
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not all(part.isalnum() or part == "" for part in host.replace("-", ".").split(".")):
                raise ValueError(
                    f'invalid host "{original}": not a host name or IP address'
                ) from None
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f'invalid host "{original}": port must be a number from 1 to 65535')
    return host, int(port_text)
