"""systemd integration on a real `olla serve`: socket activation (an fd passed as systemd does)
and sd_notify (READY and STOPPING on a datagram socket). Unit files checked by
systemd-analyze where it is installed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, make_daemon

REPO = Path(__file__).resolve().parents[2]


def test_serves_on_the_socket_systemd_passes_and_notifies_ready_and_stopping(
    tmp_path: Path,
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    notify_path = tmp_path / "notify.sock"
    notifications = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notifications.bind(str(notify_path))
    notifications.settimeout(60)
    d = make_daemon(tmp_path, host=f"127.0.0.1:{free_port()}")  # a port olla must not use
    env = {**d.env, "LISTEN_FDS": "1", "NOTIFY_SOCKET": str(notify_path)}

    def as_systemd_does() -> None:
        os.dup2(listener.fileno(), 3)  # the first passed fd is 3; dup2 makes it inheritable

    # LISTEN_PID must be olla's own pid: the shell exports its $$, then becomes python by exec
    process = subprocess.Popen(
        ["sh", "-c", 'export LISTEN_PID=$$; exec "$0" -m olla serve', sys.executable],
        env=env,
        close_fds=False,  # else fds from 3 up are closed after preexec_fn
        preexec_fn=as_systemd_does,
        stderr=d.log_path.open("wb"),
    )
    try:
        assert notifications.recv(4096).decode().startswith("READY=1")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.read() == b"olla is running"
        with pytest.raises(OSError):  # OLLA_HOST's own address stays closed
            socket.create_connection(("127.0.0.1", int(d.host.rsplit(":", 1)[1])), timeout=2)
        assert "serving on the socket systemd passed" in d.log()
        process.send_signal(signal.SIGTERM)
        assert notifications.recv(4096) == b"STOPPING=1"
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        notifications.close()
        listener.close()


def test_without_systemd_nothing_is_inherited_or_sent(tmp_path: Path) -> None:
    from olla.server import systemd

    environ = {"LISTEN_PID": "1", "LISTEN_FDS": "1"}  # for another process: not ours
    assert systemd.inherited_socket(environ) is None and environ == {}
    assert systemd.notify("READY=1", {}) is False


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_unit_files_verify(tmp_path: Path) -> None:
    # ExecStart names the installed venv; verify a copy whose olla is this interpreter's
    olla = shutil.which("olla", path=str(Path(sys.executable).parent)) or sys.executable
    for unit in ("olla.service", "olla.socket"):
        text = (REPO / "systemd" / unit).read_text()
        (tmp_path / unit).write_text(text.replace("/opt/olla/venv/bin/olla", olla))
    done = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--man=no",
            str(tmp_path / "olla.service"),
            str(tmp_path / "olla.socket"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [line for line in done.stderr.splitlines() if "olla" in line]
    assert done.returncode == 0 and not problems, done.stderr


def test_the_install_script_parses() -> None:
    for script in ("scripts/install.sh", "scripts/setup.sh"):
        checked = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
