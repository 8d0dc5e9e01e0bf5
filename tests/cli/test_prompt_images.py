"""`olla.prompt_images` and `olla run` sending images, against a stand-in daemon that says its
model reads images and records what it is sent: the one-shot prompt, the chat (on a
pseudo-terminal) and its history. The real daemon's side is tests/cli/test_run_images.py."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from olla.errors import InvalidRequest
from olla.prompt_images import (
    MAX_IMAGE_BYTES,
    attach_images,
    has_vision,
    image_kind,
    read_image,
    starts_with_image_path,
)
from tests.cli.terminal import PROMPT, Terminal

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))  # the CLI checks the signature, the daemon the rest
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(20)
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(20)
ANSWER = "A cat."


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_has_vision_by_capability_or_projector() -> None:
    assert has_vision({"capabilities": ["completion", "vision"]})
    assert has_vision({"capabilities": ["completion"], "projector_info": {"clip.x": 1}})
    assert not has_vision({"capabilities": ["completion"]}) and not has_vision({})


def test_image_kind_by_signature() -> None:
    assert [image_kind(d[:12]) for d in (PNG, JPEG, WEBP)] == ["png", "jpeg", "webp"]
    assert image_kind(b"GIF89a") is None and image_kind(b"RIFF\x00\x00\x00\x00WAVE") is None


def test_read_image_says_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "ok.webp").write_bytes(WEBP)
    assert read_image(str(tmp_path / "ok.webp")) == WEBP
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(InvalidRequest, match=r"'.*notes.png': it is not a JPEG, PNG or WebP"):
        read_image(str(tmp_path / "notes.png"))
    with pytest.raises(InvalidRequest, match=r"'.*gone.png': No such file or directory"):
        read_image(str(tmp_path / "gone.png"))
    with (tmp_path / "huge.png").open("wb") as f:
        f.truncate(MAX_IMAGE_BYTES + 1)  # sparse: nothing written
    with pytest.raises(InvalidRequest, match=r"is 104857601 bytes, more than the 100 MiB"):
        read_image(str(tmp_path / "huge.png"))


def test_attach_images_for_a_vision_model_and_a_text_only_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a cat.png").write_bytes(PNG)
    (tmp_path / "b.jpg").write_bytes(JPEG)
    text = f"compare '{tmp_path}/a cat.png' with {tmp_path}/b.jpg please"
    assert attach_images(text, True, "m") == ("compare  with  please", [b64(PNG), b64(JPEG)])
    assert capsys.readouterr().err == (
        f"Added image '{tmp_path}/a cat.png'\nAdded image '{tmp_path}/b.jpg'\n"
    )

    assert attach_images(text, False, "m") == (text, [])  # the text as typed
    assert capsys.readouterr().err == (
        'warning: model "m" reads text only (it has no vision capability); '
        f"'{tmp_path}/a cat.png', '{tmp_path}/b.jpg' goes to it as text, not as an image\n"
    )

    (tmp_path / "c.png").write_text("text")
    with pytest.raises(InvalidRequest, match="c.png': it is not"):
        attach_images(f"{tmp_path}/b.jpg {tmp_path}/c.png", True, "m")
    assert capsys.readouterr().err == ""  # none announced when one fails


def test_a_line_that_begins_with_an_image_path(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    assert starts_with_image_path(f"  {tmp_path}/a.png what is it")
    assert not starts_with_image_path(f"what is {tmp_path}/a.png")
    assert not starts_with_image_path(f"{tmp_path}/missing.png what is it")


class StandIn(ThreadingHTTPServer):
    """A daemon whose model reads images: /api/show says so, /api/chat answers ANSWER and
    keeps each body in `chats`; /api/create keeps its body in `creates`."""

    chats: list[dict[str, Any]]
    creates: list[dict[str, Any]]


class _Handler(BaseHTTPRequestHandler):
    server: StandIn

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/api/show":
            reply = [{"capabilities": ["completion", "vision"], "details": {}, "model_info": {}}]
        elif self.path == "/api/chat":
            self.server.chats.append(body)
            message = {"role": "assistant", "content": ANSWER}
            reply = [{"message": message, "done": False}, {"message": {}, "done": True}]
        elif self.path == "/api/create":
            self.server.creates.append(body)
            reply = [{"status": "success"}]
        else:
            self.send_error(404)
            return
        data = b"".join(json.dumps(r).encode() + b"\n" for r in reply)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[tuple[StandIn, dict[str, str]]]:
    """The stand-in daemon, running, and the CLI's environment to reach it."""
    server = StandIn(("127.0.0.1", 0), _Handler)
    server.chats, server.creates = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLA_")}  # none of the user's
    env |= {"OLLA_HOST": f"127.0.0.1:{server.server_port}", "HOME": str(tmp_path / "home")}
    env["TERM"] = "xterm"
    yield server, env
    server.shutdown()
    server.server_close()
    thread.join()


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "olla", "run", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_one_shot_sends_the_images_and_the_rest_of_the_text(
    stand_in: tuple[StandIn, dict[str, str]], tmp_path: Path
) -> None:
    server, env = stand_in
    (tmp_path / "cat.png").write_bytes(PNG)
    shown = run(env, "m", "describe", f"{tmp_path}/cat.png")
    assert (shown.returncode, shown.stdout) == (0, ANSWER + "\n"), shown.stderr
    assert shown.stderr == f"Added image '{tmp_path}/cat.png'\n"
    [chat] = server.chats
    assert chat["messages"] == [{"role": "user", "content": "describe", "images": [b64(PNG)]}]

    (tmp_path / "notes.png").write_text("a text file named .png")
    refused = run(env, "m", f"describe {tmp_path}/notes.png")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        f"Error: couldn't add image '{tmp_path}/notes.png': it is not a JPEG, PNG or WebP image\n"
    )
    assert len(server.chats) == 1  # nothing sent


def test_the_chat_sends_images_keeps_them_in_history_and_survives_a_bad_file(
    stand_in: tuple[StandIn, dict[str, str]],
    tmp_path: Path,
    terminals: Callable[..., Terminal],
) -> None:
    server, env = stand_in
    (tmp_path / "cat.png").write_bytes(PNG)
    (tmp_path / "notes.png").write_text("text")
    term = terminals("run", "m", env=env)
    term.expect(re.escape(PROMPT), timeout=30)
    # a line that begins with a path is a question, not an unknown /command
    shown = term.ask(f"{tmp_path}/cat.png what is this?", timeout=30)
    assert f"Added image '{tmp_path}/cat.png'" in shown and ANSWER in shown
    assert "Unknown command" not in shown
    shown = term.ask(f"and {tmp_path}/notes.png?", timeout=30)
    assert "it is not a JPEG, PNG or WebP image" in shown and ANSWER not in shown
    assert ANSWER in term.ask("and now?", timeout=30)
    assert "Created new model 'saved'" in term.ask("/save saved", timeout=30)
    term.send("/bye\r")
    assert term.wait() == 0

    first, second = server.chats  # the bad line was never sent
    question = {"role": "user", "content": "what is this?", "images": [b64(PNG)]}
    assert first["messages"] == [question]
    assert second["messages"] == [
        question,  # the image stays with its question in the conversation
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "and now?"},
    ]
    # the store keeps role and content: the image stays out of /save's body
    [saved] = server.creates
    assert saved["messages"][0] == {"role": "user", "content": "what is this?"}
    assert len(saved["messages"]) == 4 and all("images" not in m for m in saved["messages"])
