"""The daemon as a process: clean exits, a port in use, a unix socket, bad settings."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from olla.cli import cli
from tests.conftest import make_daemon, wait_for


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_exit_on_signal(tmp_path: Path, sig: int) -> None:
    d = make_daemon(tmp_path)
    d.start()
    assert d.stop(sig) == 0
    assert "shutting down" in d.log()
    assert "Traceback" not in d.log()


def test_port_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    first = make_daemon(tmp_path, "first")
    first.start()
    try:
        second = subprocess.run(
            [sys.executable, "-m", "olla", "serve"],
            env=first.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        lines = [line for line in second.stderr.splitlines() if "cannot listen" in line]
        assert lines == [
            f"Error: cannot listen on {first.host}: address already in use "
            "(is another olla running? pick another address with OLLA_HOST)"
        ]
        assert "Traceback" not in second.stderr
        assert first.ready()  # the first daemon is untouched
    finally:
        first.stop()


def test_unix_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock = tmp_path / "olla.sock"
    d = make_daemon(tmp_path, host=f"unix:{sock}")
    assert d.process is None
    d.process = subprocess.Popen(
        [sys.executable, "-m", "olla", "serve"], env=d.env, stderr=d.log_path.open("wb")
    )
    try:
        # bind makes the file, then olla sets its mode: wait for both (never wider meanwhile)
        wait_for(
            lambda: sock.exists() and stat.S_IMODE(os.stat(sock).st_mode) == 0o660,
            timeout=30,
            what="the unix socket, mode 0660",
        )
        monkeypatch.setenv("OLLA_HOST", f"unix:{sock}")

        def listed() -> bool:
            result = CliRunner().invoke(cli, ["list"])
            return result.exit_code == 0 and result.stdout.startswith("NAME")

        wait_for(listed, timeout=30, what="olla list over the unix socket")
    finally:
        assert d.stop() == 0
    assert not sock.exists()


def test_bad_setting_stops_serve_with_a_message(tmp_path: Path) -> None:
    d = make_daemon(tmp_path)
    env = {**d.env, "OLLA_NUM_PARALLEL": "lots"}
    result = subprocess.run(
        [sys.executable, "-m", "olla", "serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip() == "Error: OLLA_NUM_PARALLEL='lots': expected an integer, got 'lots'"
    )


def test_live_unix_socket_is_not_taken_over(tmp_path: Path) -> None:
    sock = tmp_path / "olla.sock"
    first = make_daemon(tmp_path, "first", host=f"unix:{sock}")
    first.process = subprocess.Popen(
        [sys.executable, "-m", "olla", "serve"], env=first.env, stderr=first.log_path.open("wb")
    )
    try:
        wait_for(sock.exists, timeout=30, what="the unix socket")
        second = subprocess.run(
            [sys.executable, "-m", "olla", "serve"],
            env=first.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert "another process is serving on it" in second.stderr
        assert sock.exists()
    finally:
        assert first.stop() == 0
