"""`olla run` with image paths against a real daemon: a one-shot prompt and the chat (on a
pseudo-terminal), for each model of IMAGE_MODELS.

A text-only model (SmolLM2) gets a warning on stderr and the text as typed, path included, and
no images: the daemon answers 400 to images for it, so an answer proves none went, and the
prompt's token count in the daemon's log equals the API's for the same text. A model that reads
images gets `Added image '...'` and an answer. What goes over the wire for a vision model is
checked against a stand-in daemon in tests/cli/test_prompt_images.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from olla.registry.sources import DEFAULT_MODEL_FILE, package_file
from tests.cli.terminal import ANSWER_TIMEOUT, PROMPT, Terminal, olla
from tests.conftest import MODELFILE, Daemon, synthetic_mmproj, wait_for

SHORT = "PARAMETER temperature 0\nPARAMETER num_predict 12\n"  # short answers: a 2-core machine


@dataclass(frozen=True)
class ImageModel:
    """A model to run with images: its name, whether it reads them, and its Modelfile's text
    (given the test's directory, where a projector may be written), created after
    `smollm2:135m` (modelfiles/smollm2.Modelfile)."""

    name: str
    vision: bool
    modelfile: Callable[[Path], str]


def _with_projector(tmp: Path) -> str:
    """SmolLM2 with scripts/synthetic_mmproj's projector (random weights: mechanics only)."""
    projector = synthetic_mmproj(tmp / "mmproj.gguf", package_file(DEFAULT_MODEL_FILE))
    return f"FROM smollm2:135m\nFROM {projector}\n" + SHORT


IMAGE_MODELS = [
    ImageModel("reader", False, lambda tmp: "FROM smollm2:135m\n" + SHORT),
    ImageModel("viewer", True, _with_projector),
]


@pytest.fixture(params=IMAGE_MODELS, ids=lambda m: m.name)
def image_model(
    request: pytest.FixtureRequest, daemon: Daemon, smollm2_gguf: Path, tmp_path: Path
) -> ImageModel:
    """The model of this run of the test, created on the daemon."""
    model: ImageModel = request.param
    (tmp_path / "Modelfile").write_text(model.modelfile(tmp_path))
    for name, modelfile in (("smollm2:135m", MODELFILE), (model.name, tmp_path / "Modelfile")):
        created = olla(daemon, "create", name, "-f", str(modelfile))
        assert created.returncode == 0, created.stderr
    return model


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    """A real PNG, in a directory with a space in its name."""
    path = tmp_path / "my pictures" / "red square.png"
    path.parent.mkdir()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(path)
    return path


def chats_answered(d: Daemon) -> list[int]:
    """The prompt token count of every /api/chat answered so far, from the daemon's log."""
    return [int(n) for n in re.findall(r"POST /api/chat -> 200 .*tokens_in=(\d+)", d.log())]


def prompt_size(d: Daemon, model: str, text: str) -> int:
    """The prompt token count the daemon gives one user message."""
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": False}
    body["options"] = {"num_predict": 1}
    request = urllib.request.Request(d.base_url + "/api/chat", json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=ANSWER_TIMEOUT) as response:
        return int(json.load(response)["prompt_eval_count"])


def expected_note(model: ImageModel, path: Path) -> str:
    if model.vision:
        return f"Added image '{path}'"
    return (
        f'warning: model "{model.name}" reads text only (it has no vision capability); '
        f"'{path}' goes to it as text, not as an image"
    )


def test_one_shot_with_an_image_path(
    daemon: Daemon, image_model: ImageModel, picture: Path
) -> None:
    question = f"Describe '{picture}' in one word."
    asked = len(chats_answered(daemon))
    shown = subprocess.run(
        [sys.executable, "-m", "olla", "run", image_model.name, question],
        env=daemon.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=ANSWER_TIMEOUT,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() and shown.stderr == expected_note(image_model, picture) + "\n"
    wait_for(lambda: len(chats_answered(daemon)) > asked, timeout=30, what="the chat's log line")
    if not image_model.vision:  # the text went as typed
        sent = chats_answered(daemon)[asked]
        assert sent == prompt_size(daemon, image_model.name, question)


def test_the_chat_with_image_paths(
    daemon: Daemon,
    image_model: ImageModel,
    picture: Path,
    tmp_path: Path,
    terminals: Callable[..., Terminal],
) -> None:
    env = {**daemon.env, "HOME": str(tmp_path / "home"), "TERM": "xterm"}
    term = terminals("run", image_model.name, env=env)
    term.expect(re.escape(PROMPT), timeout=30)
    asked = len(chats_answered(daemon))
    escaped = str(picture).replace(" ", "\\ ")
    shown = term.ask(f"What is in {escaped}?")
    assert expected_note(image_model, picture) in shown
    # a line that begins with the path is a question, not an unknown /command
    shown = term.ask(f"{escaped} what colour is it?")
    assert "Unknown command" not in shown and expected_note(image_model, picture) in shown
    wait_for(lambda: len(chats_answered(daemon)) >= asked + 2, timeout=30, what="both answers")

    (tmp_path / "notes.png").write_text("a text file named .png")
    shown = term.ask(f"And {tmp_path}/notes.png?")
    if image_model.vision:  # read, refused, not sent; the chat goes on
        assert f"Error: couldn't add image '{tmp_path}/notes.png': it is not a JPEG" in shown
    else:  # never read: it goes as text
        assert f"'{tmp_path}/notes.png' goes to it as text" in shown
    term.send("/bye\r")
    assert term.wait() == 0
    answered = asked + 2 + (not image_model.vision)
    wait_for(lambda: len(chats_answered(daemon)) >= answered, timeout=30, what="the answers")
    assert len(chats_answered(daemon)) == answered
