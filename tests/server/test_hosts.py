"""The Host check against DNS rebinding: the decision as a table, then on a real daemon."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
from pathlib import Path

import aiohttp
import ollama
import pytest

from olla.config import HostAddress, Settings, load_settings
from olla.errors import ConfigError
from olla.server.app import make_app
from olla.server.hosts import (
    HOST_POLICY,
    HostPolicy,
    host_name,
    listens_on_loopback,
    machine_address,
)
from olla.server.keys import MANAGER
from tests.conftest import Daemon, make_daemon

MACHINE = ipaddress.ip_address("203.0.113.7")  # a public address this "machine" has
POLICY = dataclasses.replace(
    HostPolicy.for_listener(
        HostAddress.parse("127.0.0.1:11435"),
        ("olla.example.com", "*.corp.test", "198.51.100.1"),
        hostname="Workstation",
    ),
    machine=lambda ip: ip == MACHINE,
)

ALLOWED = [
    None,  # HTTP/1.0 without Host: not a browser
    "",
    "localhost",
    "localhost:11435",
    "LocalHost:11435",
    "localhost.",
    "localhost.:11435",
    "app.localhost:3000",
    "127.0.0.1",
    "127.0.0.1:11435",
    "127.9.9.9:80",
    "0.0.0.0:11435",
    "[::1]",
    "[::1]:11435",
    "[::1]:",
    "::1",
    "[::ffff:127.0.0.1]:11435",
    "10.0.2.2:11435",  # QEMU's and slirp4netns' way to the host's loopback
    "192.168.1.20",
    "[fe80::1]:11435",
    "[fd00::5]:11435",
    "workstation",
    "WORKSTATION.:11435",
    "olla.example.com",
    "OLLA.Example.COM.:443",
    "build.corp.test:11435",
    "203.0.113.7:11435",  # public, but this machine's
    "198.51.100.1",  # public, and the operator's
]
REFUSED = [
    "evil.example.com",
    "evil.example.com:11435",
    "EVIL.example.com.",
    "localhost.evil.example.com",
    "localhostx",
    "127.0.0.1.nip.io:11435",
    "workstation.evil.example.com",
    "corp.test",  # *.corp.test names the subdomains only
    "mybox.local",  # any machine on the LAN may answer for it (mDNS)
    "host.docker.internal",
    "8.8.8.8",
    "8.8.8.8:11435",
    "[2001:4860:4860::8888]:11435",
    "localhost:http",
    "[::1",
    "[::1]11435",
    "[evil.example.com]:11435",
    "evil.example.com:1:2",
]


@pytest.mark.parametrize("host", ALLOWED)
def test_names_and_addresses_of_this_machine_are_allowed(host: str | None) -> None:
    assert POLICY.allows(host)


@pytest.mark.parametrize("host", REFUSED)
def test_other_names_and_public_addresses_are_refused(host: str) -> None:
    assert not POLICY.allows(host)


def test_host_name_drops_port_brackets_case_and_the_final_dot() -> None:
    assert host_name("Olla.Example.com.:11435") == "olla.example.com"
    assert host_name("[::1]:11435") == "::1"
    assert host_name("[FE80::1]") == "fe80::1"
    assert host_name("localhost:") == "localhost"
    assert host_name("localhost:x1") is None
    assert host_name("[::1]x") is None
    assert host_name("[nothing]:1") is None


@pytest.mark.parametrize(
    ("listen", "checked"),
    [
        (HostAddress.parse("127.0.0.1:1"), True),
        (HostAddress.parse("[::1]:1"), True),
        (HostAddress.parse("localhost:1"), True),
        (HostAddress.parse("0.0.0.0:1"), False),  # meant to be reached by the network's names
        (HostAddress.parse("[::]:1"), False),
        (HostAddress.parse("192.168.1.5:1"), False),
        (HostAddress.parse("unix:/run/olla.sock"), False),  # no browser reaches a unix socket
        (("127.0.0.1", 11435), True),  # a socket's getsockname()
        (("::1", 11435, 0, 0), True),
        (("::ffff:127.0.0.1", 11435, 0, 0), True),
        (("0.0.0.0", 11435), False),
        (("::", 11435, 0, 0), False),
        ("/run/olla.sock", False),
        ("", False),
    ],
)
def test_only_a_loopback_tcp_listener_is_checked(listen: object, checked: bool) -> None:
    assert listens_on_loopback(listen) is checked  # type: ignore[arg-type]
    policy = HostPolicy.for_listener(listen, (), hostname="h")  # type: ignore[arg-type]
    assert policy.allows("evil.example.com") is not checked


def test_a_star_turns_the_check_off() -> None:
    everything = HostPolicy.for_listener(HostAddress.parse("127.0.0.1:1"), ("*",), hostname="h")
    assert everything.allows("evil.example.com")


def test_allowed_hosts_are_read_lower_case_without_brackets_or_final_dot() -> None:
    env = {"OLLA_ALLOWED_HOSTS": " Olla.Example.com., [::1], *.Corp.test,2001:DB8::1 "}
    settings = load_settings(environ=env)
    assert settings.allowed_hosts == ("olla.example.com", "::1", "*.corp.test", "2001:db8::1")
    for bad in ("http://olla.example.com", "olla.example.com:8080", "a b"):
        with pytest.raises(ConfigError, match="OLLA_ALLOWED_HOSTS"):
            load_settings(environ={"OLLA_ALLOWED_HOSTS": bad})


@pytest.mark.parametrize(
    ("address", "checked"), [(("127.0.0.1", 0), True), (("0.0.0.0", 0), False), ("sock", False)]
)
async def test_a_socket_systemd_passes_decides_by_its_own_address(
    tmp_path: Path, address: tuple[str, int] | str, checked: bool
) -> None:
    # OLLA_HOST says loopback (checked) where the socket is not, and a unix socket where it is
    host = "unix:/nowhere.sock" if checked else "127.0.0.1:11435"
    settings = Settings(host=HostAddress.parse(host), models=tmp_path / "models")
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET

    async def checked_by(inherited: socket.socket | None) -> bool:
        app = make_app(settings, inherited=inherited)
        await app[MANAGER].close()  # it made a directory for runner sockets
        return app[HOST_POLICY].checked

    with socket.socket(family) as inherited:
        inherited.bind(str(tmp_path / address) if isinstance(address, str) else address)
        assert await checked_by(inherited) is checked
    assert await checked_by(None) is not checked  # OLLA_HOST alone would decide otherwise


async def status_of(d: Daemon, method: str, path: str, host: str) -> tuple[int, object]:
    async with aiohttp.ClientSession(base_url=d.base_url) as s:
        async with s.request(method, path, headers={"Host": host}, json={}) as r:
            return r.status, await r.json(content_type=None)


async def test_a_foreign_host_is_refused_and_local_ones_served(daemon: Daemon) -> None:
    port = daemon.host.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert (await status_of(daemon, "GET", "/api/tags", host)) == (200, {"models": []})
    for method, path in (("GET", "/api/tags"), ("GET", "/api/version"), ("POST", "/api/show")):
        status, body = await status_of(daemon, method, path, f"evil.example.com:{port}")
        assert status == 403, body
        assert isinstance(body, dict) and "OLLA_ALLOWED_HOSTS" in body["error"]
        assert "evil.example.com" in body["error"]
    async with aiohttp.ClientSession(base_url=daemon.base_url) as s:
        # a copy reaches the store only through the check (the model does not exist: 404)
        copy = {"source": "a", "destination": "b"}
        async with s.post("/api/copy", json=copy, headers={"Host": "evil.example.com"}) as r:
            assert r.status == 403
        async with s.post("/api/copy", json=copy) as r:
            assert r.status == 404
        async with s.get("/v1/models", headers={"Host": "evil.example.com"}) as r:
            error = (await r.json())["error"]
            assert r.status == 403 and error["type"] == "permission_error"
    # HTTP/1.0 without a Host header: not a browser
    reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
    writer.write(b"GET /api/version HTTP/1.0\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.0 200")
    writer.close()
    await writer.wait_closed()
    # the official client sends the Host of its base URL
    assert ollama.Client(host=daemon.base_url).list().models == []
    assert ollama.Client(host=f"http://localhost:{port}").list().models == []


async def test_names_the_operator_allows_are_served(tmp_path: Path) -> None:
    d = make_daemon(tmp_path)
    d.env["OLLA_ALLOWED_HOSTS"] = "olla.example.com,*.corp.test"
    d.start()
    try:
        for host in ("olla.example.com", "build.corp.test:443"):
            assert (await status_of(d, "GET", "/api/tags", host))[0] == 200
        assert (await status_of(d, "GET", "/api/tags", "corp.test"))[0] == 403
    finally:
        d.stop()


def test_machine_address_reads_the_interfaces() -> None:
    assert machine_address(ipaddress.ip_address("127.0.0.1"))
    assert not machine_address(ipaddress.ip_address("198.51.100.254"))  # TEST-NET-2
